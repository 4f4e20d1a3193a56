//! Summaries of timing samples and their markdown formatting.

/// Median, p90, min and max of a series, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (p50).
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// The `q` quantile (0..=1) of sorted samples, linearly interpolated between closest ranks
/// (the usual "type 7" definition). `None` for no samples.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Summarizes samples (any order). `None` for no samples.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    Some(Summary {
        n: v.len(),
        median: quantile(&v, 0.5)?,
        p90: quantile(&v, 0.9)?,
        min: *v.first()?,
        max: *v.last()?,
    })
}

/// The median of samples, `None` for none.
pub fn median(samples: &[f64]) -> Option<f64> {
    summarize(samples).map(|s| s.median)
}

/// A millisecond value with three significant digits (`0.412`, `4.12`, `41.2`, `412`).
pub fn ms(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `ms` of an optional value, `n/a` for none.
pub fn ms_opt(v: Option<f64>) -> String {
    v.map(ms).unwrap_or_else(|| "n/a".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0, 5.0]).unwrap_or(Summary {
            n: 0,
            median: 0.0,
            p90: 0.0,
            min: 0.0,
            max: 0.0,
        });
        assert_eq!((s.n, s.median, s.min, s.max), (5, 3.0, 1.0, 5.0));
        assert!((s.p90 - 4.6).abs() < 1e-9);
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn formats_three_digits() {
        assert_eq!(ms(0.41234), "0.412");
        assert_eq!(ms(4.1234), "4.12");
        assert_eq!(ms(41.234), "41.2");
        assert_eq!(ms(412.34), "412");
    }
}
