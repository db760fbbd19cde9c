//! RFC 6962 (Certificate Transparency) Merkle trees, over SHA-256.
//!
//! - a leaf's hash is `SHA-256(0x00 ‖ data)`; an inner node's is `SHA-256(0x01 ‖ left ‖ right)`;
//! - the Merkle Tree Hash of `n > 1` leaves splits them at `k`, the largest power of two below
//!   `n`: `MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))`; of one leaf, its leaf hash;
//!   of none, `SHA-256("")`;
//! - the audit path of leaf `m` (RFC 6962 §2.1.1, `PATH(m, D[n])`) lists the sibling hashes from
//!   the leaf up to the root, so a holder of one leaf checks it against the root in
//!   ⌈log₂ n⌉ hashes ([`root_from_path`], the verification of RFC 9162 §2.1.3.2).

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two strictly below `n` (`n ≥ 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - (n - 1).leading_zeros() - 1)
}

/// The Merkle Tree Hash of the leaves (given as leaf hashes), in order.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` among `leaves`, from the leaf's sibling up to the root's
/// children. Empty for a tree of one leaf; `None` when `index` is out of range.
pub fn audit_path(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    push_path(leaves, index, &mut path);
    Some(path)
}

/// RFC 6962 `PATH(m, D[n])`, bottom-up: the sub-paths come first, then the sibling subtree.
fn push_path(leaves: &[Hash], index: usize, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if index < k {
        push_path(&leaves[..k], index, path);
        path.push(root(&leaves[k..]));
    } else {
        push_path(&leaves[k..], index - k, path);
        path.push(root(&leaves[..k]));
    }
}

/// The root that leaf `index` of a tree of `tree_size` leaves, with this audit path, implies;
/// `None` when the path cannot belong to such a tree (wrong length, index out of range).
/// Compare the result with the root you trust.
pub fn root_from_path(leaf: &Hash, index: u64, tree_size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= tree_size {
        return None;
    }
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut hash = *leaf;
    for sibling in path {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            hash = node_hash(sibling, &hash);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    (sn == 0).then_some(hash)
}

/// The audit paths of every leaf at once, in O(n log n) (one tree walk instead of one per leaf).
pub fn audit_paths(leaves: &[Hash]) -> Vec<Vec<Hash>> {
    let mut paths = vec![Vec::new(); leaves.len()];
    fill_paths(leaves, &mut paths);
    paths
}

/// Returns the subtree's root, and appends to each leaf's path the siblings inside it.
fn fill_paths(leaves: &[Hash], paths: &mut [Vec<Hash>]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            let (left_paths, right_paths) = paths.split_at_mut(k);
            let left = fill_paths(&leaves[..k], left_paths);
            let right = fill_paths(&leaves[k..], right_paths);
            left_paths.iter_mut().for_each(|path| path.push(right));
            right_paths.iter_mut().for_each(|path| path.push(left));
            node_hash(&left, &right)
        }
    }
}

/// How many hashes an audit path has for leaf `index` of `tree_size` leaves.
pub fn audit_path_length(index: u64, tree_size: u64) -> usize {
    let (mut length, mut index, mut size) = (0, index, tree_size);
    while size > 1 {
        let k = 1_u64 << (u64::BITS - (size - 1).leading_zeros() - 1);
        if index < k {
            size = k;
        } else {
            index -= k;
            size -= k;
        }
        length += 1;
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The eight leaves of the reference tree of RFC 6962's test suite, as published with
    /// Certificate Transparency (`merkle_tree_test.cc`) and transparency-dev/merkle
    /// (`testonly/reference_test.go`, `proof/verify_test.go`): their inputs, the root of each
    /// prefix of the tree, and audit paths.
    const LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference_leaves() -> Vec<Hash> {
        LEAVES.iter().map(|data| leaf_hash(&hex::decode(data).expect("hex"))).collect()
    }

    #[test]
    fn the_empty_tree_hashes_the_empty_string() {
        assert_eq!(hex::encode(root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn roots_match_the_published_vectors() {
        let leaves = reference_leaves();
        for (size, expected) in (1..=8).zip(ROOTS) {
            assert_eq!(hex::encode(root(&leaves[..size])), expected, "tree of {size} leaves");
        }
    }

    #[test]
    fn audit_paths_match_the_published_vectors() {
        let leaves = reference_leaves();
        let vectors: [(usize, usize, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, expected) in vectors {
            let path = audit_path(&leaves[..size], index).expect("in range");
            let path_hex: Vec<String> = path.iter().map(hex::encode).collect();
            assert_eq!(path_hex, expected, "PATH({index}, D[{size}])");
            let implied = root_from_path(&leaves[index], index as u64, size as u64, &path);
            assert_eq!(implied.map(hex::encode).as_deref(), Some(ROOTS[size - 1]));
            assert_eq!(audit_path_length(index as u64, size as u64), path.len());
        }
    }

    #[test]
    fn a_path_of_the_wrong_shape_implies_no_root() {
        let leaves = reference_leaves();
        let path = audit_path(&leaves, 3).unwrap();
        assert_eq!(root_from_path(&leaves[3], 8, 8, &path), None, "index out of range");
        assert_eq!(root_from_path(&leaves[3], 3, 8, &path[..2]), None, "path too short");
        let mut long = path.clone();
        long.push(leaves[0]);
        assert_eq!(root_from_path(&leaves[3], 3, 8, &long), None, "path too long");
        assert_eq!(audit_path(&leaves, 8), None);
    }

    #[test]
    fn a_block_of_two_thousand_leaves_proves_a_leaf_in_eleven_hashes() {
        assert_eq!((0..2_000).map(|index| audit_path_length(index, 2_000)).max(), Some(11));
    }

    fn flip(hash: &Hash, bit: usize) -> Hash {
        let mut flipped = *hash;
        flipped[bit / 8] ^= 1 << (bit % 8);
        flipped
    }

    #[test]
    fn all_paths_at_once_are_the_paths_one_by_one() {
        let leaves: Vec<Hash> = (0..37_u8).map(|index| leaf_hash(&[index])).collect();
        let all = audit_paths(&leaves);
        for (index, path) in all.iter().enumerate() {
            assert_eq!(Some(path.clone()), audit_path(&leaves, index));
        }
    }

    /// For every tree size from 1 to 300 and every leaf: the inclusion proof verifies, and
    /// flipping one bit of the leaf, of one path hash or of the root breaks it. The flipped bit
    /// and path hash move with the size and the index, so the sweep flips every bit position.
    #[test]
    fn every_inclusion_proof_of_trees_up_to_300_leaves_verifies_and_a_flipped_bit_breaks_it() {
        for size in 1..=300_usize {
            let leaves: Vec<Hash> = (0..size).map(|index| leaf_hash(&(size * 1_000 + index).to_le_bytes())).collect();
            let tree_root = root(&leaves);
            for (index, path) in audit_paths(&leaves).into_iter().enumerate() {
                let (at, size_u64, leaf) = (index as u64, size as u64, &leaves[index]);
                let bit = (size * 31 + index * 7) % 256;
                assert_eq!(root_from_path(leaf, at, size_u64, &path), Some(tree_root), "leaf {index} of {size}");
                assert_ne!(root_from_path(&flip(leaf, bit), at, size_u64, &path), Some(tree_root));
                if !path.is_empty() {
                    let mut broken = path.clone();
                    let which = (size + index) % broken.len();
                    broken[which] = flip(&broken[which], bit);
                    assert_ne!(root_from_path(leaf, at, size_u64, &broken), Some(tree_root));
                }
                assert_ne!(root_from_path(leaf, at, size_u64, &path), Some(flip(&tree_root, bit)));
            }
        }
    }

    proptest! {
        /// Any bit, any leaf, any size up to 300.
        #[test]
        fn any_flipped_bit_breaks_a_proof(size in 1usize..=300, pick in any::<prop::sample::Index>(), bit in 0usize..256) {
            let leaves: Vec<Hash> = (0..size).map(|index| leaf_hash(&index.to_le_bytes())).collect();
            let index = pick.index(size);
            let path = audit_path(&leaves, index).unwrap();
            let tree_root = root(&leaves);
            let (at, size_u64) = (index as u64, size as u64);
            prop_assert_eq!(root_from_path(&leaves[index], at, size_u64, &path), Some(tree_root));
            prop_assert_ne!(root_from_path(&flip(&leaves[index], bit), at, size_u64, &path), Some(tree_root));
            for which in 0..path.len() {
                let mut broken = path.clone();
                broken[which] = flip(&broken[which], bit);
                prop_assert_ne!(root_from_path(&leaves[index], at, size_u64, &broken), Some(tree_root));
            }
        }
    }
}
