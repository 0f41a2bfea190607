//! Learning-rate schedules. The grad pass makes the learning rate the graph input `%lr`,
//! so a schedule is only the number fed at each step.
//!
//! Invariant: every schedule gives the base rate at the first step and never a negative
//! or non-finite rate for valid settings ([`LrSchedule::validate`]).

use std::f64::consts::PI;

/// How the learning rate changes over a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Cosine annealing per step from the base rate to `final_fraction` × base at the
    /// end of the last epoch.
    Cosine {
        /// The final rate as a fraction of the base rate, in [0, 1].
        final_fraction: f64,
    },
    /// The base rate multiplied by `gamma` every `every` epochs.
    Step {
        /// The period in epochs (at least 1).
        every: usize,
        /// The factor, in (0, 1].
        gamma: f64,
    },
}

impl LrSchedule {
    /// The rate at 0-based `step` of a run of `total_steps` steps, in 0-based `epoch`.
    pub fn lr(&self, base: f64, epoch: usize, step: u64, total_steps: u64) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine { final_fraction } => {
                let t = if total_steps == 0 {
                    0.0
                } else {
                    (step as f64 / total_steps as f64).min(1.0)
                };
                let end = base * final_fraction;
                end + (base - end) * 0.5 * (1.0 + (PI * t).cos())
            }
            LrSchedule::Step { every, gamma } => {
                base * gamma.powi((epoch / every.max(1)).min(i32::MAX as usize) as i32)
            }
        }
    }

    /// Checks the settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Cosine { final_fraction } if !(0.0..=1.0).contains(&final_fraction) => {
                Err(format!(
                    "the cosine schedule's final fraction must be in [0, 1], found {final_fraction}"
                ))
            }
            LrSchedule::Cosine { .. } => Ok(()),
            LrSchedule::Step { every: 0, .. } => {
                Err("the step schedule's period must be at least 1 epoch".into())
            }
            LrSchedule::Step { gamma, .. } if !(gamma > 0.0 && gamma <= 1.0) => Err(format!(
                "the step schedule's factor must be in (0, 1], found {gamma}"
            )),
            LrSchedule::Step { .. } => Ok(()),
        }
    }
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LrSchedule::Constant => f.write_str("constant"),
            LrSchedule::Cosine { final_fraction } if *final_fraction == 0.0 => {
                f.write_str("cosine")
            }
            LrSchedule::Cosine { final_fraction } => write!(f, "cosine:{final_fraction}"),
            LrSchedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
        }
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = String;
    /// `constant`, `cosine`, `cosine:FINAL_FRACTION`, `step:EVERY:GAMMA` (e.g. `step:5:0.1`).
    fn from_str(s: &str) -> Result<LrSchedule, String> {
        let bad = || {
            format!(
                "unknown learning-rate schedule '{s}' (valid: constant, cosine, cosine:FINAL_FRACTION, step:EVERY:GAMMA)"
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        let sched = match parts.as_slice() {
            ["constant"] => LrSchedule::Constant,
            ["cosine"] => LrSchedule::Cosine {
                final_fraction: 0.0,
            },
            ["cosine", f] => LrSchedule::Cosine {
                final_fraction: f.parse().map_err(|_| bad())?,
            },
            ["step", e, g] => LrSchedule::Step {
                every: e.parse().map_err(|_| bad())?,
                gamma: g.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        };
        sched.validate()?;
        Ok(sched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(LrSchedule::Constant.lr(0.1, 5, 100, 200), 0.1);
        let c = LrSchedule::Cosine {
            final_fraction: 0.0,
        };
        assert_eq!(c.lr(0.1, 0, 0, 100), 0.1);
        assert!((c.lr(0.1, 0, 50, 100) - 0.05).abs() < 1e-12);
        assert!(c.lr(0.1, 0, 100, 100).abs() < 1e-12);
        let c = LrSchedule::Cosine {
            final_fraction: 0.1,
        };
        assert!((c.lr(1.0, 0, 100, 100) - 0.1).abs() < 1e-12);
        let s = LrSchedule::Step {
            every: 2,
            gamma: 0.5,
        };
        let rates: Vec<f64> = (0..5).map(|e| s.lr(0.8, e, 0, 0)).collect();
        assert_eq!(rates, [0.8, 0.8, 0.4, 0.4, 0.2]);
    }

    #[test]
    fn parsing() {
        for text in ["constant", "cosine", "cosine:0.1", "step:5:0.1"] {
            assert_eq!(text.parse::<LrSchedule>().unwrap().to_string(), text);
        }
        assert!(
            "linear"
                .parse::<LrSchedule>()
                .unwrap_err()
                .starts_with("unknown learning-rate schedule 'linear'")
        );
        assert_eq!(
            "step:0:0.5".parse::<LrSchedule>().unwrap_err(),
            "the step schedule's period must be at least 1 epoch"
        );
        assert!("step:2:1.5".parse::<LrSchedule>().is_err());
        assert!("cosine:2".parse::<LrSchedule>().is_err());
    }
}
