//! The statistics the metrics score with, as SciPy, scikit-learn, scikit-image and NumPy compute
//! them (Quantus calls those): Pearson and Spearman correlation, Shannon entropy, the Gini
//! coefficient, trapezoid areas, ROC AUC, 1-D SSIM, and NumPy's pairwise `float32` sum (so sums
//! of attributions round as Quantus's do).

/// NumPy's pairwise summation of `float32` values (`np.sum` on a contiguous `float32` array):
/// blocks of up to 128 summed through eight accumulators, larger ranges split in halves whose
/// split point is a multiple of eight.
pub fn pairwise_sum_f32(values: &[f32]) -> f32 {
    let n = values.len();
    if n < 8 {
        let mut sum = 0.0f32;
        for &v in values {
            sum += v;
        }
        sum
    } else if n <= 128 {
        let mut r = [0.0f32; 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        for chunk in values[8..whole].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[whole..] {
            sum += v;
        }
        sum
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum_f32(&values[..half]) + pairwise_sum_f32(&values[half..])
    }
}

/// NumPy's `float32` mean of a contiguous array: the pairwise sum divided in `float32`.
pub fn mean_f32(values: &[f32]) -> f32 {
    pairwise_sum_f32(values) / values.len() as f32
}

/// Pearson's r (`scipy.stats.pearsonr`); NaN when either side is constant or shorter than 2.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len();
    if n < 2 || n != b.len() {
        return f64::NAN;
    }
    let mean_a = a.iter().sum::<f64>() / n as f64;
    let mean_b = b.iter().sum::<f64>() / n as f64;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - mean_a, y - mean_b);
        ab += dx * dy;
        aa += dx * dx;
        bb += dy * dy;
    }
    if aa == 0.0 || bb == 0.0 {
        return f64::NAN;
    }
    (ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0)
}

/// Ranks from 1 with ties given their average rank (`scipy.stats.rankdata`).
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's ρ (`scipy.stats.spearmanr`): Pearson's r of the average ranks.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Shannon entropy in nats of non-negative weights (`scipy.stats.entropy`: normalised to sum 1,
/// zeros contribute nothing).
pub fn entropy(weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    -weights
        .iter()
        .map(|&w| w / total)
        .filter(|&p| p > 0.0)
        .map(|p| p * p.ln())
        .sum::<f64>()
}

/// Quantus's Gini coefficient: every value raised by 1e-7, sorted,
/// `Σ (2i − n − 1)·aᵢ / (n·Σa)`.
pub fn gini(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().map(|v| v + 1e-7).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, v)| (2.0 * (i + 1) as f64 - n - 1.0) * v)
        .sum();
    weighted / (n * sorted.iter().sum::<f64>())
}

/// Area under a curve sampled at unit steps (`np.trapz(values, dx=1)`).
pub fn trapezoid(values: &[f64]) -> f64 {
    values.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum()
}

/// Area under the ROC curve of `scores` against boolean `truth` (scikit-learn's `roc_curve` +
/// `auc`: one point per distinct score, trapezoids between them); NaN without both classes.
pub fn roc_auc(truth: &[bool], scores: &[f64]) -> f64 {
    let positives = truth.iter().filter(|&&t| t).count() as f64;
    let negatives = truth.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let (mut last_tpr, mut last_fpr) = (0.0, 0.0);
    let mut area = 0.0;
    let mut i = 0;
    while i < order.len() {
        let score = scores[order[i]];
        while i < order.len() && scores[order[i]] == score {
            if truth[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        let (tpr, fpr) = (tp / positives, fp / negatives);
        area += (fpr - last_fpr) * (tpr + last_tpr) / 2.0;
        last_tpr = tpr;
        last_fpr = fpr;
    }
    area
}

/// `scipy.ndimage.uniform_filter1d` in reflect mode (edges mirrored including the edge sample),
/// summed in `f64`, stored as `f32`.
fn uniform_filter(values: &[f32], size: usize) -> Vec<f32> {
    let n = values.len() as isize;
    let before = (size / 2) as isize;
    let at = |i: isize| -> f64 {
        let mut i = i;
        loop {
            if i < 0 {
                i = -i - 1;
            } else if i >= n {
                i = 2 * n - i - 1;
            } else {
                return f64::from(values[i as usize]);
            }
        }
    };
    (0..n)
        .map(|i| {
            let sum: f64 = (i - before..i - before + size as isize).map(at).sum();
            (sum / size as f64) as f32
        })
        .collect()
}

/// `skimage.metrics.structural_similarity` of two 1-D `float32` signals with its defaults
/// (7-sample uniform window, K1 = 0.01, K2 = 0.03, sample covariance, data range = the spread
/// of both signals together), computed in `float32` as scikit-image does.
pub fn ssim(a: &[f32], b: &[f32]) -> f64 {
    const WIN: usize = 7;
    if a.len() < WIN || a.len() != b.len() {
        return f64::NAN;
    }
    let max = a.iter().chain(b).copied().fold(f32::NEG_INFINITY, f32::max);
    let min = a.iter().chain(b).copied().fold(f32::INFINITY, f32::min);
    let range = f64::from((max - min).abs());
    let c1 = ((0.01 * range).powi(2)) as f32;
    let c2 = ((0.03 * range).powi(2)) as f32;
    let cov_norm = (WIN as f64 / (WIN - 1) as f64) as f32;
    let product =
        |x: &[f32], y: &[f32]| -> Vec<f32> { x.iter().zip(y).map(|(p, q)| p * q).collect() };
    let ux = uniform_filter(a, WIN);
    let uy = uniform_filter(b, WIN);
    let uxx = uniform_filter(&product(a, a), WIN);
    let uyy = uniform_filter(&product(b, b), WIN);
    let uxy = uniform_filter(&product(a, b), WIN);
    let pad = (WIN - 1) / 2;
    let n = a.len();
    let mut total = 0.0f64;
    for i in pad..n - pad {
        let vx = cov_norm * (uxx[i] - ux[i] * ux[i]);
        let vy = cov_norm * (uyy[i] - uy[i] * uy[i]);
        let vxy = cov_norm * (uxy[i] - ux[i] * uy[i]);
        let a1 = 2.0 * ux[i] * uy[i] + c1;
        let a2 = 2.0 * vxy + c2;
        let b1 = ux[i] * ux[i] + uy[i] * uy[i] + c1;
        let b2 = vx + vy + c2;
        total += f64::from((a1 * a2) / (b1 * b2));
    }
    total / (n - 2 * pad) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_of_known_series() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [2.0, 4.0, 6.0, 8.0, 10.5];
        assert!((pearson(&a, &b) - 0.998_868_137_724_437_5).abs() < 1e-12);
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-12);
        assert!(pearson(&a, &[1.0; 5]).is_nan());
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn entropy_gini_and_areas() {
        assert!((entropy(&[1.0, 1.0, 0.0, 2.0]) - 1.039_720_770_8).abs() < 1e-9);
        assert!(gini(&[0.0, 0.0, 0.0, 1.0]) > 0.74);
        assert!(gini(&[1.0, 1.0, 1.0, 1.0]).abs() < 1e-9);
        assert_eq!(trapezoid(&[0.0, 1.0, 1.0]), 1.5);
        assert_eq!(
            roc_auc(&[true, false, true, false], &[0.9, 0.1, 0.8, 0.3]),
            1.0
        );
        assert_eq!(roc_auc(&[true, false], &[0.5, 0.5]), 0.5);
    }

    #[test]
    fn pairwise_sum_splits_as_numpy() {
        let values: Vec<f32> = (0..1000).map(|i| 1.0 + i as f32 * 1e-3).collect();
        let exact: f64 = values.iter().map(|&v| f64::from(v)).sum();
        assert!((f64::from(pairwise_sum_f32(&values)) - exact).abs() < 1e-3);
        assert_eq!(pairwise_sum_f32(&[1.0, 2.0]), 3.0);
    }

    #[test]
    fn ssim_matches_scikit_image() {
        // skimage.metrics.structural_similarity(a, ±a, data_range=…) on float32 sin(0.3 i).
        let a: Vec<f32> = (0..50).map(|i| (i as f32 * 0.3).sin()).collect();
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-6);
        let b: Vec<f32> = a.iter().map(|v| -v).collect();
        assert!(
            (ssim(&a, &b) - 0.926_045_475_591_143_5).abs() < 1e-6,
            "{}",
            ssim(&a, &b)
        );
    }
}
