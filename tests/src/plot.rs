//! A small hand-written SVG line chart for simulation reports (no plotting dependency): time on the
//! x axis, up to two y axes, vertical event markers and shaded spans.

use std::fmt::Write;

/// Which y axis a series uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Left axis.
    Left,
    /// Right axis.
    Right,
}

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke colour (any SVG colour).
    pub color: String,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// Axis the values are read against.
    pub axis: Axis,
    /// (x, y) points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// A chart: axes, lines, markers and shaded spans.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Left axis label.
    pub y_label: String,
    /// Right axis label (no right axis when empty).
    pub y2_label: String,
    /// X range end (the range starts at 0).
    pub x_max: f64,
    /// Left axis range end (starts at 0).
    pub y_max: f64,
    /// Right axis range end (starts at 0).
    pub y2_max: f64,
    /// The lines.
    pub series: Vec<Series>,
    /// Vertical markers: x and a short label.
    pub markers: Vec<(f64, String)>,
    /// Shaded x spans (e.g. while a goal is not met) and their legend text.
    pub spans: Vec<(f64, f64)>,
    /// Legend text of the shaded spans.
    pub span_label: String,
}

const W: f64 = 960.0;
const H: f64 = 450.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 120.0;
/// Height of one legend row.
const LEGEND_ROW: f64 = 18.0;

/// The smallest of 1, 2, 2.5, 5 × 10^k that is at least `v` (axis ends that divide into five
/// readable ticks).
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&c| c >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * base)
}

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let x_max = if self.x_max > 0.0 { self.x_max } else { 1.0 };
        let y_max = nice_ceiling(self.y_max);
        let y2_max = nice_ceiling(self.y2_max);
        let sx = |x: f64| LEFT + (x / x_max).clamp(0.0, 1.0) * pw;
        let sy = |y: f64, axis: Axis| {
            let m = if axis == Axis::Left { y_max } else { y2_max };
            TOP + ph - (y / m).clamp(0.0, 1.0) * ph
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            W / 2.0,
            esc(&self.title)
        );
        for &(a, b) in &self.spans {
            let (xa, xb) = (sx(a), sx(b));
            let _ = writeln!(
                s,
                r##"<rect x="{xa:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="#f4b6b6" opacity="0.5"/>"##,
                (xb - xa).max(1.0)
            );
        }
        // Grid and ticks: 5 steps on each axis.
        for k in 0..=5 {
            let f = k as f64 / 5.0;
            let y = TOP + ph - f * ph;
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
                LEFT + pw
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                tick(f * y_max)
            );
            if !self.y2_label.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                    LEFT + pw + 6.0,
                    y + 4.0,
                    tick(f * y2_max)
                );
            }
            let x = LEFT + f * pw;
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + ph + 16.0,
                tick(f * x_max)
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        for (x, label) in &self.markers {
            let x = sx(*x);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="2,3"/>"##,
                TOP + ph
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
                x + 2.0,
                TOP + 10.0,
                esc(label)
            );
        }
        for series in &self.series {
            if series.points.is_empty() {
                continue;
            }
            let pts: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y, series.axis)))
                .collect();
            let dash = if series.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"#,
                esc(&series.color),
                pts.join(" ")
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            TOP + ph + 34.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        if !self.y2_label.is_empty() {
            let _ = writeln!(
                s,
                r#"<text transform="translate({:.1},{:.1}) rotate(90)" text-anchor="middle">{}</text>"#,
                W - 14.0,
                TOP + ph / 2.0,
                esc(&self.y2_label)
            );
        }
        // Legend under the axis label, wrapped into as many rows as it needs.
        let mut lx = LEFT;
        let mut ly = TOP + ph + 60.0;
        let mut place = |width: f64| {
            if lx > LEFT && lx + width > W - 10.0 {
                lx = LEFT;
                ly += LEGEND_ROW;
            }
            let at = (lx, ly);
            lx += width;
            at
        };
        for series in &self.series {
            let (lx, ly) = place(40.0 + 7.0 * series.name.chars().count() as f64);
            let dash = if series.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
                ly - 4.0,
                lx + 22.0,
                ly - 4.0,
                esc(&series.color)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
                lx + 26.0,
                esc(&series.name)
            );
        }
        if !self.spans.is_empty() && !self.span_label.is_empty() {
            let (lx, ly) = place(40.0 + 7.0 * self.span_label.chars().count() as f64);
            let _ = writeln!(
                s,
                r##"<rect x="{lx:.1}" y="{:.1}" width="18" height="10" fill="#f4b6b6"/>"##,
                ly - 10.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
                lx + 24.0,
                esc(&self.span_label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ends_are_nice() {
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(36.0), 50.0);
        assert_eq!(nice_ceiling(21.0), 25.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(89.7), 100.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn svg_has_every_series_marker_and_escapes_text() {
        let chart = Chart {
            title: "a < b & c".into(),
            x_label: "time (s)".into(),
            y_label: "%".into(),
            y2_label: "n".into(),
            x_max: 10.0,
            y_max: 100.0,
            y2_max: 5.0,
            series: vec![
                Series {
                    name: "one".into(),
                    color: "blue".into(),
                    dashed: false,
                    axis: Axis::Left,
                    points: vec![(0.0, 0.0), (10.0, 100.0)],
                },
                Series {
                    name: "two".into(),
                    color: "red".into(),
                    dashed: true,
                    axis: Axis::Right,
                    points: vec![(5.0, 5.0)],
                },
            ],
            markers: vec![(3.0, "wave 1".into())],
            spans: vec![(4.0, 6.0)],
            span_label: "gap".into(),
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b &amp; c"));
        assert!(svg.contains("wave 1"));
        // (0,0) maps to the bottom-left corner, (10,100) to the top-right one.
        assert!(svg.contains(&format!("{LEFT:.1},{:.1}", H - BOTTOM)));
        assert!(svg.contains(&format!("{:.1},{TOP:.1}", W - RIGHT)));
    }
}
