//! Pattern containment: whether one path pattern only matches paths another matches, so
//! that `credproxy report` never proposes a pattern broader than the rule it narrows.

use super::{PathPattern, Seg};

impl PathPattern {
    /// Whether every path this pattern matches is also matched by `wider`. Sound, not
    /// complete: `true` is a proof, `false` may mean "could not tell" (for a proposed
    /// narrower pattern that is never made broader than the rule it replaces).
    pub fn within(&self, wider: &PathPattern) -> bool {
        segs_within(&self.segs, &wider.segs)
    }
}

/// Whether the language of `narrow` is inside that of `wide` (see [`PathPattern::within`]).
fn segs_within(narrow: &[Seg], wide: &[Seg]) -> bool {
    match (narrow.split_first(), wide.split_first()) {
        (None, None) => true,
        (_, Some((Seg::Rest, wide_rest))) => {
            // `**` takes nothing, or one more segment of `narrow` (a `**` of `narrow` only
            // against the whole `**`).
            segs_within(narrow, wide_rest)
                || match narrow.split_first() {
                    Some((Seg::Rest, n_rest)) => segs_within(n_rest, wide_rest),
                    Some((_, n_rest)) => segs_within(n_rest, wide),
                    None => false,
                }
        }
        (None, Some(_)) | (Some(_), None) => false,
        (Some((n, n_rest)), Some((w, w_rest))) => {
            let head = match (n, w) {
                (Seg::Lit(a), Seg::Lit(b)) => a == b,
                (Seg::Lit(a), Seg::One) => !a.is_empty(),
                (Seg::One, Seg::One) => true,
                _ => false,
            };
            head && segs_within(n_rest, w_rest)
        }
    }
}
