"""RFC 9162 (Certificate Transparency v2) Merkle trees: hashing, roots and proofs.

Hashing follows RFC 9162 section 2.1.1 with SHA-256::

    MTH({})      = SHA-256()                       (the empty string)
    leaf hash    = SHA-256(0x00 || d)
    node hash    = SHA-256(0x01 || left || right)
    MTH(D[n])    = node(MTH(D[0:k]), MTH(D[k:n]))  k = largest power of two < n

Everything below works on *leaf hashes* (the 0x00-prefixed hashes of leaf
data), so callers hash leaf data once with :func:`leaf_hash`.

- :class:`Frontier` keeps only the roots of the perfect subtrees on the right
  edge of the tree: O(log n) memory, amortised O(1) append, O(log n) root.
  The ledger uses it for each block's log root.
- :class:`MerkleTree` keeps every leaf hash and memoises perfect-subtree roots,
  so inclusion (section 2.1.3.1) and consistency (section 2.1.4.1) proofs cost
  O(log^2 n) once warm.
- :func:`verify_inclusion` (section 2.1.3.2) and :func:`verify_consistency`
  (section 2.1.4.2) raise :class:`carechain.core.errors.IntegrityError` saying what
  was expected and what was computed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from carechain.core.errors import IntegrityError

HASH_BYTES = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: MTH({}) = SHA-256 of the empty string (RFC 9162 section 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 section 2.1.1 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 section 2.1.1 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (n > 1), the split point of RFC 9162 section 2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def _short(digest: bytes) -> str:
    return digest.hex()[:16] + ".."


class Frontier:
    """The right edge of an RFC 9162 tree: roots of its perfect subtrees, largest first.

    A tree of n leaves decomposes into one perfect subtree per set bit of n;
    appending merges equal-sized subtrees like a binary counter, and the root
    folds the stack from the right (RFC 9162 section 2.1.1 splits at the
    largest power of two, which is exactly this decomposition).
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, subtree root)

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> Frontier:
        """A frontier over the given leaf hashes."""
        frontier = cls()
        for leaf in leaf_hashes:
            frontier.append(leaf)
        return frontier

    @classmethod
    def from_subtrees(cls, size: int, node: Callable[[int, int], bytes]) -> Frontier:
        """The frontier of a tree of size leaves from its perfect subtrees' roots, without its leaves.

        node(level, position) is the root of the aligned perfect subtree of 2**level leaves
        starting at leaf position * 2**level (level 0: a leaf hash); one call per set bit of size.
        """
        frontier = cls()
        offset = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                frontier._stack.append((1 << level, node(level, offset >> level)))
                offset += 1 << level
        frontier._size = size
        return frontier

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (see :func:`leaf_hash`)."""
        if len(leaf) != HASH_BYTES:
            raise ValueError("a leaf hash is 32 bytes")
        size, digest = 1, leaf
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            size, digest = left_size + size, node_hash(left, digest)
        self._stack.append((size, digest))
        self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves so far (RFC 9162 section 2.1.1); EMPTY_ROOT when empty."""
        if not self._stack:
            return EMPTY_ROOT
        digest = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            digest = node_hash(left, digest)
        return digest

    def copy(self) -> Frontier:
        """An independent copy (to compute a root before committing to an append)."""
        other = Frontier()
        other._size = self._size
        other._stack = list(self._stack)
        return other


class MerkleTree:
    """An append-only RFC 9162 tree over leaf hashes, with memoised perfect subtrees.

    Perfect, aligned subtrees never change once complete, so their roots are
    cached; any range root then needs O(log n) cache lookups.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._leaves: list[bytes] = []
        self._cache: dict[tuple[int, int], bytes] = {}
        for leaf in leaf_hashes:
            self.append(leaf)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._leaves)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        if len(leaf) != HASH_BYTES:
            raise ValueError("a leaf hash is 32 bytes")
        self._leaves.append(leaf)

    def leaf(self, index: int) -> bytes:
        """The leaf hash at index."""
        return self._leaves[index]

    def _range_root(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for lo < hi (RFC 9162 section 2.1.1)."""
        n = hi - lo
        if n == 1:
            return self._leaves[lo]
        perfect = n & (n - 1) == 0 and lo % n == 0
        if perfect:
            cached = self._cache.get((lo, n))
            if cached is not None:
                return cached
        k = _largest_power_of_two_below(n)
        digest = node_hash(self._range_root(lo, lo + k), self._range_root(lo + k, hi))
        if perfect:
            self._cache[(lo, n)] = digest
        return digest

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if size < 0 or size > self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first size leaves (default: all)."""
        size = self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._range_root(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 section 2.1.3.1, leaf to root."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is outside 0..{size - 1}")
        path: list[bytes] = []
        lo, hi, m = 0, size, index
        # Walk from the root down; the RFC's recursion appends on the way back up,
        # so collect top-down and reverse.
        while hi - lo > 1:
            k = _largest_power_of_two_below(hi - lo)
            if m < k:
                path.append(self._range_root(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._range_root(lo, lo + k))
                lo, m = lo + k, m - k
        path.reverse()
        return path

    def consistency_proof(self, first_size: int, second_size: int | None = None) -> list[bytes]:
        """PROOF(first_size, D[second_size]) of RFC 9162 section 2.1.4.1.

        Empty when first_size is 0 or equal to second_size (nothing to prove).
        """
        second_size = self._check_size(second_size)
        if not 0 <= first_size <= second_size:
            raise ValueError(f"first size {first_size} is outside 0..{second_size}")
        if first_size in (0, second_size):
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, second_size, first_size, True
        # SUBPROOF(m, D[lo:hi], complete), unrolled top-down then reversed.
        while m != hi - lo:
            k = _largest_power_of_two_below(hi - lo)
            if m <= k:
                proof.append(self._range_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range_root(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self._range_root(lo, hi))
        proof.reverse()
        return proof


def completed_subtrees(size: int, leaves: Sequence[bytes],
                       node: Callable[[int, int], bytes]) -> dict[tuple[int, int], bytes]:
    """Roots of the perfect subtrees (level >= 1) that appending leaves to a tree of size leaves completes.

    Keys are (level, position) as in :meth:`Frontier.from_subtrees`; node(level, position) gives a
    subtree of the existing tree (only left siblings on its right edge are asked for: O(log size)).
    Persisting these lets a tree be reopened and proven from without rehashing its leaves.
    """
    made: dict[tuple[int, int], bytes] = {}
    for offset, leaf in enumerate(leaves):
        level, position, digest = 0, size + offset, leaf
        made[(0, position)] = digest
        while position & 1:  # a right child: its parent is complete now
            left = made.get((level, position - 1))
            if left is None:
                left = node(level, position - 1)
            level, position = level + 1, position >> 1
            digest = node_hash(left, digest)
            made[(level, position)] = digest
    return {key: digest for key, digest in made.items() if key[0] > 0}


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes (RFC 9162 section 2.1.1)."""
    return Frontier.from_leaf_hashes(leaf_hashes).root()


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) over a list of leaf hashes (RFC 9162 section 2.1.3.1)."""
    return MerkleTree(leaf_hashes).inclusion_proof(index)


def consistency_proof(first_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(first_size, D[n]) over a list of leaf hashes (RFC 9162 section 2.1.4.1)."""
    return MerkleTree(leaf_hashes).consistency_proof(first_size)


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for i, digest in enumerate(hashes):
        if len(digest) != HASH_BYTES:
            raise IntegrityError(f"{what}: hash {i} is {len(digest)} bytes, expected {HASH_BYTES}")


def verify_inclusion(leaf: bytes, index: int, tree_size: int, path: Sequence[bytes], expected_root: bytes) -> None:
    """Check an inclusion proof with the algorithm of RFC 9162 section 2.1.3.2.

    leaf is the leaf *hash*. Raises IntegrityError naming expected vs computed root.
    """
    _check_hashes("inclusion proof", [leaf, *path])
    if not 0 <= index < tree_size:
        raise IntegrityError(f"inclusion proof: leaf index {index} is not below tree size {tree_size}")
    fn, sn, r = index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            raise IntegrityError("inclusion proof: path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("inclusion proof: path is shorter than the tree is deep")
    if r != expected_root:
        raise IntegrityError(
            f"inclusion proof: root mismatch (expected {_short(expected_root)}, computed {_short(r)})"
        )


def verify_consistency(
    first_size: int, second_size: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """Check a consistency proof with the algorithm of RFC 9162 section 2.1.4.2.

    Edge cases the RFC leaves to the caller: first_size == second_size needs an
    empty proof and equal roots; first_size == 0 needs an empty proof and
    first_root == EMPTY_ROOT (every tree extends the empty tree).
    """
    _check_hashes("consistency proof", [first_root, second_root, *proof])
    if not 0 <= first_size <= second_size:
        raise IntegrityError(f"consistency proof: first size {first_size} exceeds second size {second_size}")
    if first_size == 0:
        if proof:
            raise IntegrityError("consistency proof: must be empty from the empty tree")
        if first_root != EMPTY_ROOT:
            raise IntegrityError(
                f"consistency proof: first root mismatch (expected {_short(EMPTY_ROOT)}, "
                f"computed {_short(first_root)})"
            )
        return
    if first_size == second_size:
        if proof:
            raise IntegrityError("consistency proof: must be empty between equal sizes")
        if first_root != second_root:
            raise IntegrityError(
                f"consistency proof: equal sizes but roots differ (expected {_short(first_root)}, "
                f"computed {_short(second_root)})"
            )
        return
    # Step 1.
    if not proof:
        raise IntegrityError("consistency proof: empty proof between different sizes")
    path = list(proof)
    # Step 2: a power-of-two first tree is itself a node of the second tree.
    if first_size & (first_size - 1) == 0:
        path.insert(0, first_root)
    # Steps 3-4.
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise IntegrityError("consistency proof: proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise IntegrityError("consistency proof: proof is shorter than the tree is deep")
    if fr != first_root:
        raise IntegrityError(
            f"consistency proof: first root mismatch (expected {_short(first_root)}, computed {_short(fr)})"
        )
    if sr != second_root:
        raise IntegrityError(
            f"consistency proof: second root mismatch (expected {_short(second_root)}, computed {_short(sr)})"
        )
