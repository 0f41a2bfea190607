//! Edit distance for "did you mean" suggestions, bounded so that hostile names cannot make
//! it expensive.
//!
//! The distance is [`strsim::osa_distance`] (optimal string alignment: a swap of
//! neighbours counts as one edit). It is computed only for names of at most
//! [`MAX_SUGGEST_CHARS`] characters whose lengths differ by at most `limit`: a suggestion
//! is only useful for a short, similar name, and a 100,000-character name would otherwise
//! cost 10^10 steps.

/// Longest name (in characters) for which a suggestion is computed.
pub const MAX_SUGGEST_CHARS: usize = 64;

/// The edit distance between `a` and `b` if both are at most [`MAX_SUGGEST_CHARS`]
/// characters long and their lengths differ by at most `limit`, else `None`.
pub fn bounded_distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    // count at most one char beyond the bound: no work proportional to a long name
    let short = |s: &str| {
        let n = s.chars().take(MAX_SUGGEST_CHARS + 1).count();
        (n <= MAX_SUGGEST_CHARS).then_some(n)
    };
    let (la, lb) = (short(a)?, short(b)?);
    if la.abs_diff(lb) > limit {
        return None;
    }
    Some(strsim::osa_distance(a, b)).filter(|&d| d <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_within_the_bounds() {
        assert_eq!(bounded_distance("kitten", "sitting", 3), Some(3));
        assert_eq!(bounded_distance("kitten", "sitting", 2), None);
        assert_eq!(bounded_distance("rleu", "relu", 1), Some(1));
        assert_eq!(bounded_distance("", "ab", 2), Some(2));
        // lengths too different: not computed
        assert_eq!(bounded_distance("a", "abcdef", 3), None);
    }

    #[test]
    fn long_names_are_not_compared() {
        let a = "a".repeat(MAX_SUGGEST_CHARS + 1);
        let b = "b".repeat(MAX_SUGGEST_CHARS + 1);
        assert_eq!(bounded_distance(&a, &b, usize::MAX), None);
        let a = "a".repeat(MAX_SUGGEST_CHARS);
        let mut b = a.clone();
        b.replace_range(0..1, "b");
        assert_eq!(bounded_distance(&a, &b, 1), Some(1));
        // a million-character name against a short one: instant, and no suggestion
        let huge = "x".repeat(1_000_000);
        assert_eq!(bounded_distance(&huge, "x", usize::MAX), None);
    }
}
