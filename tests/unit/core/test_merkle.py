"""RFC 9162 Merkle tree: roots, inclusion and consistency proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carechain.core import merkle
from carechain.core.errors import IntegrityError

# Leaves and roots of the RFC 6962/9162 reference test vectors (certificate-transparency merkle_tree_test).
VECTOR_LEAVES = [bytes.fromhex(h) for h in
                 ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
N = 20


# --- straight transcriptions of the RFC 9162 definitions, as an independent reference ----------

def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return merkle.node_hash(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def flip(digest: bytes) -> bytes:
    return bytes([digest[0] ^ 1]) + digest[1:]


# --- hashing and roots -------------------------------------------------------------------------

def test_hashes_use_rfc9162_domain_separation_prefixes():
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.root([]) == merkle.EMPTY_ROOT


def test_roots_match_the_reference_vectors():
    hashes = [merkle.leaf_hash(leaf) for leaf in VECTOR_LEAVES]
    tree = merkle.MerkleTree(hashes)
    for size, expected in enumerate(VECTOR_ROOTS, start=1):
        assert merkle.root(hashes[:size]).hex() == expected
        assert tree.root(size).hex() == expected


def test_frontier_root_matches_full_recomputation_at_every_size():
    hashes = leaves(70)
    frontier = merkle.Frontier()
    assert frontier.root() == merkle.EMPTY_ROOT
    for size, leaf in enumerate(hashes, start=1):
        frontier.append(leaf)
        assert frontier.size == size
        assert frontier.root() == ref_mth(hashes[:size])


def test_frontier_copy_does_not_affect_the_original():
    frontier = merkle.Frontier.from_leaf_hashes(leaves(5))
    before = frontier.root()
    other = frontier.copy()
    other.append(leaves(6)[5])
    assert frontier.root() == before and frontier.size == 5
    assert other.root() == ref_mth(leaves(6))


# --- inclusion ---------------------------------------------------------------------------------

def test_every_inclusion_proof_of_every_tree_up_to_n_verifies():
    hashes = leaves(N)
    tree = merkle.MerkleTree(hashes)
    for size in range(1, N + 1):
        root = tree.root(size)
        assert root == ref_mth(hashes[:size])
        for index in range(size):
            path = tree.inclusion_proof(index, size)
            assert path == ref_path(index, hashes[:size])
            merkle.verify_inclusion(hashes[index], index, size, path, root)


def test_tampered_inclusion_proofs_fail():
    hashes = leaves(N + 1)
    tree = merkle.MerkleTree(hashes)
    for size in range(1, N + 1):
        root = tree.root(size)
        for index in range(size):
            path = tree.inclusion_proof(index, size)
            with pytest.raises(IntegrityError):
                merkle.verify_inclusion(flip(hashes[index]), index, size, path, root)
            with pytest.raises(IntegrityError):
                merkle.verify_inclusion(hashes[index], index, size, path, flip(root))
            for i in range(len(path)):
                bad = list(path)
                bad[i] = flip(bad[i])
                with pytest.raises(IntegrityError):
                    merkle.verify_inclusion(hashes[index], index, size, bad, root)
            if size > 1:
                with pytest.raises(IntegrityError):
                    merkle.verify_inclusion(hashes[index], (index + 1) % size, size, path, root)
            # The size is bound by the root: a proof for one size does not verify against another's root.
            with pytest.raises(IntegrityError):
                merkle.verify_inclusion(hashes[index], index, size + 1, path, tree.root(size + 1))
            with pytest.raises(IntegrityError):
                merkle.verify_inclusion(hashes[index], index, size, [*path, root], root)


def test_inclusion_failure_says_expected_and_computed():
    hashes = leaves(3)
    path = merkle.inclusion_proof(1, hashes)
    root = merkle.root(hashes)
    with pytest.raises(IntegrityError, match=r"expected .*computed"):
        merkle.verify_inclusion(flip(hashes[1]), 1, 3, path, root)


def test_inclusion_index_outside_the_tree_fails():
    with pytest.raises(IntegrityError, match="not below tree size"):
        merkle.verify_inclusion(leaves(1)[0], 1, 1, [], leaves(1)[0])
    with pytest.raises(ValueError):
        merkle.MerkleTree(leaves(3)).inclusion_proof(3)


# --- consistency -------------------------------------------------------------------------------

def test_every_consistency_proof_between_sizes_up_to_n_verifies():
    hashes = leaves(N)
    tree = merkle.MerkleTree(hashes)
    for second in range(1, N + 1):
        for first in range(1, second + 1):
            proof = tree.consistency_proof(first, second)
            assert proof == ref_subproof(first, hashes[:second], True)
            merkle.verify_consistency(first, second, proof, tree.root(first), tree.root(second))


def test_tampered_consistency_proofs_fail():
    hashes = leaves(N + 1)
    tree = merkle.MerkleTree(hashes)
    for second in range(2, N + 1):
        for first in range(1, second):
            proof = tree.consistency_proof(first, second)
            r1, r2 = tree.root(first), tree.root(second)
            with pytest.raises(IntegrityError):
                merkle.verify_consistency(first, second, proof, flip(r1), r2)
            with pytest.raises(IntegrityError):
                merkle.verify_consistency(first, second, proof, r1, flip(r2))
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = flip(bad[i])
                with pytest.raises(IntegrityError):
                    merkle.verify_consistency(first, second, bad, r1, r2)
            with pytest.raises(IntegrityError):
                merkle.verify_consistency(first, second + 1, proof, r1, tree.root(second + 1))
            with pytest.raises(IntegrityError):
                merkle.verify_consistency(first, second, [], r1, r2)
            with pytest.raises(IntegrityError):
                merkle.verify_consistency(second, first, proof, r2, r1)


def test_consistency_edge_cases():
    hashes = leaves(4)
    root = merkle.root(hashes)
    merkle.verify_consistency(0, 4, [], merkle.EMPTY_ROOT, root)
    merkle.verify_consistency(4, 4, [], root, root)
    assert merkle.consistency_proof(0, hashes) == [] == merkle.consistency_proof(4, hashes)
    with pytest.raises(IntegrityError):
        merkle.verify_consistency(4, 4, [], root, flip(root))
    with pytest.raises(IntegrityError):
        merkle.verify_consistency(4, 4, [root], root, root)
    with pytest.raises(IntegrityError):
        merkle.verify_consistency(0, 4, [], root, root)


# --- properties --------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=300), st.data())
def test_proofs_from_the_tree_always_verify(data_leaves, data):
    hashes = [merkle.leaf_hash(d) for d in data_leaves]
    tree = merkle.MerkleTree(hashes)
    size = data.draw(st.integers(1, len(hashes)))
    index = data.draw(st.integers(0, size - 1))
    first = data.draw(st.integers(1, size))
    assert tree.root(size) == merkle.root(hashes[:size])
    merkle.verify_inclusion(hashes[index], index, size, tree.inclusion_proof(index, size), tree.root(size))
    merkle.verify_consistency(first, size, tree.consistency_proof(first, size), tree.root(first), tree.root(size))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.data())
def test_an_inclusion_proof_does_not_verify_for_another_leaf(size, data):
    hashes = leaves(size)
    index = data.draw(st.integers(0, size - 1))
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
    tree = merkle.MerkleTree(hashes)
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(hashes[other], index, size, tree.inclusion_proof(index, size), tree.root())
