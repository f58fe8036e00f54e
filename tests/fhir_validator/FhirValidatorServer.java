import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.r5.utils.validation.constants.BestPracticeWarningLevel;

/**
 * Offline HAPI FHIR R4 instance validator for CareChain's conformance tests (tests/fhir_validator.py).
 *
 * <p>One JVM validates many resources: start-up and loading the R4 StructureDefinitions take seconds, each
 * resource afterwards milliseconds. Protocol, one line each way:
 *
 * <ul>
 *   <li>first, once the definitions are loaded, it prints {"ready":true,"hapi":VERSION,"startup_ms":N};
 *   <li>each input line on stdin is either a resource as one line of JSON (starts with "{") or the path of
 *       a file holding the resource's exact bytes (for inputs that are not one clean line: BOM, newlines);
 *   <li>for each it prints {"valid":BOOL,"ms":N,"issues":[{"severity","location","message","messageId",
 *       "line","col"}]} where valid means no error- or fatal-level issue.
 * </ul>
 *
 * <p>Nothing is fetched from the network: the support chain holds only the R4 base definitions and the
 * code systems defined in FHIR itself, and code systems it does not have (SNOMED CT, LOINC, RxNorm, ...)
 * are reported as warnings, never errors, because they cannot be checked offline.
 */
public final class FhirValidatorServer {
    private FhirValidatorServer() {}

    // UnknownCodeSystemWarningValidationSupport is deprecated in HAPI 8 but still the one explicit switch
    // for "unknown code system = warning"; revisit when the pinned version is bumped.
    @SuppressWarnings("deprecation")
    public static void main(String[] args) throws Exception {
        long started = System.nanoTime();
        FhirContext context = FhirContext.forR4();
        UnknownCodeSystemWarningValidationSupport unknownCodeSystems =
                new UnknownCodeSystemWarningValidationSupport(context);
        unknownCodeSystems.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);
        ValidationSupportChain chain = new ValidationSupportChain(
                new DefaultProfileValidationSupport(context),
                new CommonCodeSystemsTerminologyService(context),
                new InMemoryTerminologyServerValidationSupport(context),
                new SnapshotGeneratingValidationSupport(context),
                // Last: answers only for code systems nobody above knows.
                unknownCodeSystems);
        FhirInstanceValidator instanceValidator = new FhirInstanceValidator(chain);
        // CareChain and Synthea use extensions whose definitions are not in the base spec (US Core, ...).
        instanceValidator.setAnyExtensionsAllowed(true);
        instanceValidator.setErrorForUnknownProfiles(false);
        instanceValidator.setBestPracticeWarningLevel(BestPracticeWarningLevel.Ignore);
        FhirValidator validator = context.newValidator().registerValidatorModule(instanceValidator);

        // Warm up: the first validation loads and snapshots the definitions; "ready" is sent after it.
        validator.validateWithResult("{\"resourceType\":\"Patient\",\"gender\":\"female\"}");

        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        out.println("{\"ready\":true,\"hapi\":" + quote(ca.uhn.fhir.util.VersionUtil.getVersion())
                + ",\"startup_ms\":" + (System.nanoTime() - started) / 1_000_000 + "}");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isBlank()) {
                continue;
            }
            out.println(validate(validator, line));
        }
    }

    /** One result line for one input line (a resource, or a path to one). */
    private static String validate(FhirValidator validator, String line) {
        long started = System.nanoTime();
        StringBuilder issues = new StringBuilder();
        boolean valid = true;
        try {
            String resource = line.startsWith("{")
                    ? line
                    : new String(Files.readAllBytes(Path.of(line)), StandardCharsets.UTF_8);
            ValidationResult result = validator.validateWithResult(resource);
            for (SingleValidationMessage message : result.getMessages()) {
                String severity = message.getSeverity().getCode();
                if (severity.equals("error") || severity.equals("fatal")) {
                    valid = false;
                }
                appendIssue(issues, severity, message.getLocationString(), message.getMessage(),
                        message.getMessageId(), message.getLocationLine(), message.getLocationCol());
            }
        } catch (Exception | LinkageError | StackOverflowError failure) {
            // The validator could not even read the input (unparseable JSON, unreadable file, ...), or
            // hit a class that the pom leaves out: report it on this resource and carry on.
            valid = false;
            appendIssue(issues, "fatal", "", failure.toString(), "carechain-harness-exception", null, null);
        }
        return "{\"valid\":" + valid + ",\"ms\":" + (System.nanoTime() - started) / 1_000_000
                + ",\"issues\":[" + issues + "]}";
    }

    private static void appendIssue(StringBuilder issues, String severity, String location, String message,
                                    String messageId, Integer line, Integer col) {
        if (issues.length() > 0) {
            issues.append(',');
        }
        issues.append("{\"severity\":").append(quote(severity))
                .append(",\"location\":").append(quote(location))
                .append(",\"message\":").append(quote(message))
                .append(",\"messageId\":").append(quote(messageId))
                .append(",\"line\":").append(line)
                .append(",\"col\":").append(col)
                .append('}');
    }

    /** A JSON string literal (or null). */
    private static String quote(String text) {
        if (text == null) {
            return "null";
        }
        StringBuilder quoted = new StringBuilder(text.length() + 2).append('"');
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> quoted.append("\\\"");
                case '\\' -> quoted.append("\\\\");
                case '\n' -> quoted.append("\\n");
                case '\r' -> quoted.append("\\r");
                case '\t' -> quoted.append("\\t");
                default -> {
                    if (c < 0x20) {
                        quoted.append(String.format("\\u%04x", (int) c));
                    } else {
                        quoted.append(c);
                    }
                }
            }
        }
        return quoted.append('"').toString();
    }
}
