//! Figures, each beside its reference measured in the same run, their ratio
//! and target; printed as the Markdown table of `docs/BENCHMARKS.md` and as
//! JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// What a figure must reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// `value / reference ≥ x`.
    RatioAtLeast(f64),
    /// `value < x` (in the figure's unit).
    Below(f64),
    /// No target: shown for context.
    None,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit (`req/s`, `MB/s`, `ms`, `MiB`, `items/s`, `s`).
    pub unit: &'static str,
    /// The reference, in words.
    pub reference: String,
    /// The reference's value (same run), if there is one.
    pub reference_value: Option<f64>,
    /// The reference's unit.
    pub reference_unit: &'static str,
    /// The target.
    pub target: Target,
}

impl Figure {
    /// `value / reference_value`.
    #[must_use]
    pub fn ratio(&self) -> Option<f64> {
        self.reference_value
            .filter(|r| *r > 0.0)
            .map(|r| self.value / r)
    }

    /// Whether the target is met (`None` without a target).
    #[must_use]
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtLeast(x) => Some(self.ratio().is_some_and(|r| r >= x)),
            Target::Below(x) => Some(self.value < x),
            Target::None => None,
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::RatioAtLeast(x) => format!("ratio ≥ {x}"),
            Target::Below(x) => format!("< {} {}", num(x), self.unit),
            Target::None => "—".to_owned(),
        }
    }
}

/// A number with sensible precision for a table.
#[must_use]
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The Markdown table of `figures`.
#[must_use]
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| figure | value | reference (same run) | ratio | target | met? |\n|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let reference = match f.reference_value {
            Some(r) => format!("{}: {} {}", f.reference, num(r), f.reference_unit),
            None => f.reference.clone(),
        };
        let ratio = f.ratio().map_or_else(|| "—".to_owned(), num);
        let met = match f.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} {} | {} | {} | {} | {} |",
            f.name,
            num(f.value),
            f.unit,
            reference,
            ratio,
            f.target_text(),
            met
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(value: f64, reference: Option<f64>, target: Target) -> Figure {
        Figure {
            name: "f".into(),
            value,
            unit: "req/s",
            reference: "hello".into(),
            reference_value: reference,
            reference_unit: "req/s",
            target,
        }
    }

    #[test]
    fn ratio_targets_compare_the_ratio() {
        assert_eq!(
            fig(60.0, Some(100.0), Target::RatioAtLeast(0.5)).met(),
            Some(true)
        );
        assert_eq!(
            fig(40.0, Some(100.0), Target::RatioAtLeast(0.5)).met(),
            Some(false)
        );
        assert_eq!(
            fig(40.0, None, Target::RatioAtLeast(0.5)).met(),
            Some(false)
        );
    }

    #[test]
    fn below_targets_compare_the_value() {
        assert_eq!(fig(19.0, None, Target::Below(20.0)).met(), Some(true));
        assert_eq!(fig(21.0, None, Target::Below(20.0)).met(), Some(false));
        assert_eq!(fig(1.0, None, Target::None).met(), None);
    }

    #[test]
    fn the_table_has_a_row_per_figure() {
        let t = markdown(&[fig(60.0, Some(100.0), Target::RatioAtLeast(0.5))]);
        assert!(t.contains("| f | 60.0 req/s | hello: 100 req/s | 0.600 | ratio ≥ 0.5 | yes |"));
    }
}
