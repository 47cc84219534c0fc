//! Ensemble answers: pick the answer the other experts agree with most.
//!
//! When a query goes to k experts, each answer is embedded (unit vectors) and answer i scores
//! Σ_{j≠i} w_j · cos(a_i, a_j) / Σ_{j≠i} w_j, with w_j the reputation of answer j's expert floored at
//! [`super::REPUTATION_FLOOR`]: the reputation-weighted mean agreement of the others with it. The
//! highest score wins (ties: the earliest answer), i.e. the embedding medoid; the answers at
//! [`AGREEMENT_THRESHOLD`] or more from it are reported as agreeing.

use super::{cosine, weight};

/// Least cosine at which two answers count as agreeing. Measured with MiniLM: paraphrases of one
/// answer score 0.55–0.97 (most above 0.7), different answers on the topic 0.3–0.6. Embeddings
/// measure likeness, not truth: a same-shaped answer with another fact ("the capital is Lyon")
/// can still reach 0.75.
pub const AGREEMENT_THRESHOLD: f32 = 0.7;

/// The chosen answer of an ensemble.
#[derive(Clone, Debug, PartialEq)]
pub struct Consensus {
    /// Index of the chosen answer.
    pub chosen: usize,
    /// Indices of the answers agreeing with it (itself included), ascending.
    pub agreeing: Vec<usize>,
    /// The chosen answer's reputation-weighted mean cosine to the others (1 for a single answer).
    pub score: f32,
}

/// The medoid of `answers` (embeddings) weighted by their experts' `reputations`. `None` when
/// there are no answers, the two slices differ in length, or the embeddings differ in dimension or
/// hold non-finite values.
pub fn medoid(answers: &[Vec<f32>], reputations: &[f64]) -> Option<Consensus> {
    let dim = answers.first()?.len();
    let valid = answers.len() == reputations.len()
        && answers
            .iter()
            .all(|a| a.len() == dim && a.iter().all(|x| x.is_finite()));
    if !valid {
        return None;
    }
    let weights: Vec<f64> = reputations.iter().map(|&r| weight(r)).collect();
    let score = |i: usize| -> f32 {
        let (mut sum, mut total) = (0f64, 0f64);
        for (j, a) in answers.iter().enumerate().filter(|&(j, _)| j != i) {
            sum += weights[j] * f64::from(cosine(&answers[i], a));
            total += weights[j];
        }
        if total > 0.0 {
            (sum / total) as f32
        } else {
            1.0
        }
    };
    let (chosen, score) = (0..answers.len()).map(|i| (i, score(i))).fold(
        None,
        |best: Option<(usize, f32)>, (i, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((i, s)),
        },
    )?;
    let agreeing = (0..answers.len())
        .filter(|&j| j == chosen || cosine(&answers[chosen], &answers[j]) >= AGREEMENT_THRESHOLD)
        .collect();
    Some(Consensus {
        chosen,
        agreeing,
        score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        super::super::normalized(v).expect("direction")
    }

    #[test]
    fn the_majority_cluster_wins() {
        // Three similar answers and two outliers that agree with each other.
        let answers = vec![
            unit(&[1.0, 0.0, 0.0, 0.8]),
            unit(&[1.0, 0.1, 0.0, 0.0]),
            unit(&[0.0, 1.0, 0.0, 0.1]),
            unit(&[1.0, 0.0, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.1, 0.0]),
        ];
        let c = medoid(&answers, &[0.5; 5]).expect("consensus");
        assert_eq!(c.chosen, 1);
        assert_eq!(c.agreeing, vec![0, 1, 3]);
        assert!(c.score > 0.3 && c.score < 1.0, "{}", c.score);
    }

    #[test]
    fn reputation_decides_between_equal_camps() {
        let a = unit(&[1.0, 0.0]);
        let b = unit(&[0.0, 1.0]);
        let answers = vec![a.clone(), a, b.clone(), b];
        let c = medoid(&answers, &[0.1, 0.1, 0.9, 0.9]).expect("consensus");
        assert_eq!((c.chosen, c.agreeing), (2, vec![2, 3]));
        // Equal reputations: the earliest of the tied answers.
        assert_eq!(medoid(&answers, &[0.5; 4]).map(|c| c.chosen), Some(0));
        // NaN reputations count as the floor, never as NaN scores.
        let c = medoid(&answers, &[f64::NAN; 4]).expect("consensus");
        assert!(c.score.is_finite());
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(medoid(&[], &[]), None);
        let one = medoid(&[unit(&[1.0, 2.0])], &[0.3]).expect("consensus");
        assert_eq!((one.chosen, one.agreeing, one.score), (0, vec![0], 1.0));
        assert_eq!(medoid(&[unit(&[1.0, 2.0])], &[]), None);
        assert_eq!(medoid(&[vec![1.0, 0.0], vec![1.0]], &[1.0, 1.0]), None);
        assert_eq!(medoid(&[vec![f32::NAN, 0.0]], &[1.0]), None);
    }
}
