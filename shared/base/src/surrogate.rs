//! The interpretable surrogate: weighted ridge regression with scikit-learn's semantics,
//! weighted R², and `lime`'s feature-selection modes (including the LARS-lasso path).
//!
//! Linear algebra (Cholesky, SVD) is nalgebra's. The LARS homotopy is written here because no
//! maintained Rust crate provides the LARS-lasso *path*, and `lime`'s `lasso_path` selection is
//! defined by the support sets at the path's breakpoints.

use nalgebra::{DMatrix, DVector};

use crate::{Error, Result};

/// How `lime` picks the features the final surrogate is fitted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeatureSelection {
    /// `forward_selection` when at most 6 features are wanted, else `highest_weights`.
    #[default]
    Auto,
    /// Ridge(α = 0.01) on all features, rank by |coef · x₀|.
    HighestWeights,
    /// Greedily add the feature that maximises the weighted R² of an unregularised fit.
    ForwardSelection,
    /// Walk the LARS-lasso path back from its least-regularised end.
    LassoPath,
    /// Every feature.
    None,
}

crate::names::named!(FeatureSelection, "feature selection", {
    Auto => "auto",
    HighestWeights => "highest_weights",
    ForwardSelection => "forward_selection",
    LassoPath => "lasso_path",
    None => "none",
});

/// A fitted weighted ridge model.
#[derive(Clone, Debug, PartialEq)]
pub struct Ridge {
    /// Coefficients, one per design column.
    pub coef: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
}

/// A design matrix with its targets and sample weights (rows are samples).
pub struct Problem<'a> {
    /// Row-major design, `n_samples × n_features`.
    pub design: &'a DMatrix<f64>,
    /// Regression targets.
    pub target: &'a [f64],
    /// Sample weights (the LIME kernel).
    pub weights: &'a [f64],
}

fn weighted_mean(values: impl Iterator<Item = f64>, weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    values.zip(weights).map(|(v, w)| v * w).sum::<f64>() / total
}

impl Problem<'_> {
    fn check(&self) -> Result<()> {
        let n = self.design.nrows();
        if self.target.len() != n || self.weights.len() != n || n == 0 {
            return Err(Error::Parameter(format!(
                "surrogate needs as many targets and weights as samples: {n} samples, {} \
                 targets, {} weights",
                self.target.len(),
                self.weights.len()
            )));
        }
        if self.weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || self.weights.iter().sum::<f64>() <= 0.0
        {
            return Err(Error::Parameter(
                "sample weights must be finite, non-negative and not all zero".into(),
            ));
        }
        Ok(())
    }

    /// The sub-problem on some columns.
    fn columns(&self, columns: &[usize]) -> DMatrix<f64> {
        self.design.select_columns(columns)
    }

    /// Weighted centring and √w row scaling (scikit-learn's `_preprocess_data` +
    /// `_rescale_data`): returns (Xc, yc, x_offset, y_offset).
    fn centred(&self, design: &DMatrix<f64>) -> (DMatrix<f64>, DVector<f64>, Vec<f64>, f64) {
        let x_offset: Vec<f64> = design
            .column_iter()
            .map(|col| weighted_mean(col.iter().copied(), self.weights))
            .collect();
        let y_offset = weighted_mean(self.target.iter().copied(), self.weights);
        let sqrt_w: Vec<f64> = self.weights.iter().map(|w| w.sqrt()).collect();
        let xc = DMatrix::from_fn(design.nrows(), design.ncols(), |i, j| {
            (design[(i, j)] - x_offset[j]) * sqrt_w[i]
        });
        let yc = DVector::from_fn(design.nrows(), |i, _| {
            (self.target[i] - y_offset) * sqrt_w[i]
        });
        (xc, yc, x_offset, y_offset)
    }

    /// Weighted ridge with intercept on `columns`: minimises Σ wᵢ(yᵢ − b − xᵢβ)² + α‖β‖²
    /// (α not scaled by Σw), solved by Cholesky of XcᵀXc + αI as scikit-learn's "cholesky"
    /// solver, falling back to least squares (SVD) when that matrix is singular.
    pub fn ridge(&self, columns: &[usize], alpha: f64) -> Result<Ridge> {
        self.check()?;
        let design = self.columns(columns);
        let (xc, yc, x_offset, y_offset) = self.centred(&design);
        let k = columns.len();
        let mut gram = xc.transpose() * &xc;
        for i in 0..k {
            gram[(i, i)] += alpha;
        }
        let rhs = xc.transpose() * &yc;
        let coef = match gram.clone().cholesky() {
            Some(cholesky) => cholesky.solve(&rhs),
            None => gram
                .svd(true, true)
                .solve(&rhs, 1e-12)
                .map_err(|e| Error::Parameter(format!("surrogate fit failed: {e}")))?,
        };
        let intercept = y_offset
            - x_offset
                .iter()
                .zip(coef.iter())
                .map(|(o, c)| o * c)
                .sum::<f64>();
        Ok(Ridge {
            coef: coef.iter().copied().collect(),
            intercept,
        })
    }

    /// Predictions of a model fitted on `columns`, one per sample.
    pub fn predict(&self, columns: &[usize], model: &Ridge) -> Vec<f64> {
        (0..self.design.nrows())
            .map(|i| {
                model.intercept
                    + columns
                        .iter()
                        .zip(&model.coef)
                        .map(|(&j, c)| self.design[(i, j)] * c)
                        .sum::<f64>()
            })
            .collect()
    }

    /// Weighted R² of a model on `columns` (scikit-learn's `r2_score` with `sample_weight`:
    /// 1 when the target is constant and perfectly fitted, 0 when constant and not).
    pub fn r2(&self, columns: &[usize], model: &Ridge) -> f64 {
        let predicted = self.predict(columns, model);
        let mean = weighted_mean(self.target.iter().copied(), self.weights);
        let (mut residual, mut total) = (0.0, 0.0);
        for ((y, p), w) in self.target.iter().zip(&predicted).zip(self.weights) {
            residual += w * (y - p) * (y - p);
            total += w * (y - mean) * (y - mean);
        }
        if total == 0.0 {
            if residual == 0.0 { 1.0 } else { 0.0 }
        } else {
            1.0 - residual / total
        }
    }

    /// The features `lime` keeps for the final fit, in `lime`'s order.
    pub fn select(&self, selection: FeatureSelection, num_features: usize) -> Result<Vec<usize>> {
        self.check()?;
        let n_features = self.design.ncols();
        let all: Vec<usize> = (0..n_features).collect();
        match selection {
            FeatureSelection::None => Ok(all),
            FeatureSelection::Auto if num_features <= 6 => {
                self.select(FeatureSelection::ForwardSelection, num_features)
            }
            FeatureSelection::Auto => self.select(FeatureSelection::HighestWeights, num_features),
            FeatureSelection::HighestWeights => {
                let model = self.ridge(&all, 0.01)?;
                let mut ranked: Vec<(usize, f64)> = model
                    .coef
                    .iter()
                    .enumerate()
                    .map(|(j, c)| (j, c * self.design[(0, j)]))
                    .collect();
                ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
                Ok(ranked
                    .into_iter()
                    .take(num_features)
                    .map(|(j, _)| j)
                    .collect())
            }
            FeatureSelection::ForwardSelection => {
                let mut used: Vec<usize> = Vec::new();
                for _ in 0..num_features.min(n_features) {
                    let mut best = (0usize, -100_000_000.0f64);
                    for feature in (0..n_features).filter(|f| !used.contains(f)) {
                        let mut columns = used.clone();
                        columns.push(feature);
                        let score = self.r2(&columns, &self.ridge(&columns, 0.0)?);
                        if score > best.1 {
                            best = (feature, score);
                        }
                    }
                    used.push(best.0);
                }
                Ok(used)
            }
            FeatureSelection::LassoPath => {
                let (xc, yc, _, _) = self.centred(self.design);
                let path = lars_lasso_path(&xc, &yc);
                let mut nonzero = all;
                for coefs in path.iter().skip(1).rev() {
                    nonzero = (0..n_features).filter(|&j| coefs[j] != 0.0).collect();
                    if nonzero.len() <= num_features {
                        break;
                    }
                }
                Ok(nonzero)
            }
        }
    }
}

/// The LARS-lasso path (Efron et al. 2004, with the lasso modification): coefficient vectors at
/// every breakpoint, from all-zero to the least-regularised end, as
/// `sklearn.linear_model.lars_path(X, y, method="lasso")` returns them (one column per step).
pub fn lars_lasso_path(x: &DMatrix<f64>, y: &DVector<f64>) -> Vec<Vec<f64>> {
    let (n_samples, n_features) = x.shape();
    let max_active = n_features.min(n_samples);
    let tiny = f64::EPSILON;
    let mut beta = vec![0.0; n_features];
    let mut path = vec![beta.clone()];
    let mut residual = y.clone();
    let mut active: Vec<usize> = Vec::new();
    let mut dropped_last = false;
    for _ in 0..500 {
        let correlations = x.transpose() * &residual;
        let inactive: Vec<usize> = (0..n_features).filter(|j| !active.contains(j)).collect();
        let c_max = active
            .iter()
            .chain(&inactive)
            .map(|&j| correlations[j].abs())
            .fold(0.0, f64::max);
        if c_max <= tiny {
            break;
        }
        if !dropped_last {
            if active.len() >= max_active {
                break;
            }
            let Some(&entering) = inactive
                .iter()
                .max_by(|&&a, &&b| correlations[a].abs().total_cmp(&correlations[b].abs()))
            else {
                break;
            };
            active.push(entering);
        }
        let signs: Vec<f64> = active.iter().map(|&j| correlations[j].signum()).collect();
        let xa = x.select_columns(&active);
        let gram = xa.transpose() * &xa;
        let s = DVector::from_vec(signs.clone());
        let Some(direction) = gram.clone().cholesky().map(|c| c.solve(&s)) else {
            break;
        };
        let norm = 1.0 / s.dot(&direction).sqrt();
        let w = direction * norm;
        let u = &xa * &w;
        let a = x.transpose() * &u;
        let mut gamma = c_max / norm;
        for &j in &inactive {
            if active.contains(&j) {
                continue;
            }
            for candidate in [
                (c_max - correlations[j]) / (norm - a[j]),
                (c_max + correlations[j]) / (norm + a[j]),
            ] {
                if candidate > tiny && candidate < gamma {
                    gamma = candidate;
                }
            }
        }
        let mut drop = None;
        for (k, &j) in active.iter().enumerate() {
            let crossing = -beta[j] / w[k];
            if crossing > tiny && crossing < gamma {
                gamma = crossing;
                drop = Some(k);
            }
        }
        for (k, &j) in active.iter().enumerate() {
            beta[j] += gamma * w[k];
        }
        residual -= &u * gamma;
        dropped_last = false;
        if let Some(k) = drop {
            beta[active[k]] = 0.0;
            active.remove(k);
            dropped_last = true;
        }
        path.push(beta.clone());
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_an_exact_linear_model() {
        let design = DMatrix::from_fn(40, 3, |i, j| ((i * (j + 2)) % 7) as f64 - 3.0 + j as f64);
        let target: Vec<f64> = (0..40)
            .map(|i| 1.5 + 2.0 * design[(i, 0)] - 0.5 * design[(i, 1)] + 0.25 * design[(i, 2)])
            .collect();
        let weights: Vec<f64> = (0..40).map(|i| 0.1 + (i % 3) as f64).collect();
        let problem = Problem {
            design: &design,
            target: &target,
            weights: &weights,
        };
        let model = problem.ridge(&[0, 1, 2], 0.0).unwrap();
        for (got, want) in model.coef.iter().zip([2.0, -0.5, 0.25]) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
        assert!((model.intercept - 1.5).abs() < 1e-9);
        assert!((problem.r2(&[0, 1, 2], &model) - 1.0).abs() < 1e-12);
        // Regularisation shrinks the coefficients.
        let shrunk = problem.ridge(&[0, 1, 2], 100.0).unwrap();
        assert!(shrunk.coef[0].abs() < model.coef[0].abs());
    }

    #[test]
    fn bad_weights_are_errors() {
        let design = DMatrix::from_element(3, 2, 1.0);
        let problem = Problem {
            design: &design,
            target: &[1.0, 2.0, 3.0],
            weights: &[0.0, 0.0, 0.0],
        };
        assert!(problem.ridge(&[0], 1.0).is_err());
        assert!("best".parse::<FeatureSelection>().is_err());
        assert_eq!(
            "lasso_path".parse::<FeatureSelection>().unwrap(),
            FeatureSelection::LassoPath
        );
        let json = serde_json::to_string(&FeatureSelection::ForwardSelection).unwrap();
        assert_eq!(json, "\"forward_selection\"");
    }
}
