//! Statistics of interleaved rounds: medians, spread, per-round ratios.
//! Pure logic.

use serde::Serialize;

/// Median of the values (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Median, extremes and count of a series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// Of the rounds that produced a value; `None` when none did.
    pub fn of(rounds: &[Option<f64>]) -> Option<Summary> {
        let v: Vec<f64> = rounds
            .iter()
            .flatten()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        Some(Summary {
            median: median(&v)?,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }

    /// Half the range, as a percentage of the median: `±x%`.
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            return 0.0;
        }
        (self.max - self.min) / 2.0 / self.median.abs() * 100.0
    }
}

/// `a[i] / b[i]` for each round where both have a value and `b[i]` is not 0.
/// Ratios are taken round by round, so a slow phase of the machine (the
/// rounds are interleaved) cancels out instead of landing on one side.
pub fn ratios(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<Option<f64>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) if *y != 0.0 && x.is_finite() && y.is_finite() => Some(x / y),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summary_skips_missing_rounds() {
        let s = Summary::of(&[Some(10.0), None, Some(12.0), Some(8.0)]).unwrap();
        assert_eq!(
            s,
            Summary {
                median: 10.0,
                min: 8.0,
                max: 12.0,
                n: 3
            }
        );
        assert!((s.spread_pct() - 20.0).abs() < 1e-9);
        assert_eq!(Summary::of(&[None, None]), None);
        assert_eq!(Summary::of(&[Some(f64::NAN)]), None);
    }

    #[test]
    fn ratios_are_per_round() {
        let a = [Some(2.0), Some(3.0), None, Some(4.0)];
        let b = [Some(1.0), Some(0.0), Some(5.0), Some(8.0)];
        assert_eq!(ratios(&a, &b), vec![Some(2.0), None, None, Some(0.5)]);
    }

    #[test]
    fn median_of_ratios_is_not_ratio_of_medians() {
        // A machine that slows down in round 3 for both sides: per-round
        // ratios stay at 2, the ratio of medians does not.
        let a = [Some(20.0), Some(20.0), Some(2.0)];
        let b = [Some(10.0), Some(1.0), Some(1.0)];
        let r = Summary::of(&ratios(&a, &b)).unwrap();
        assert_eq!(r.median, 2.0);
        let ma = Summary::of(&a).unwrap().median;
        let mb = Summary::of(&b).unwrap().median;
        assert_eq!(ma / mb, 20.0);
    }
}
