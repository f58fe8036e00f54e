"""Sensitivity labelling (layer 0): which clinical content makes a record sensitive, and its HL7 v3 security
labels. The labelling report that reviews a data set lives in :mod:`carechain.dev.labelling_report`."""
