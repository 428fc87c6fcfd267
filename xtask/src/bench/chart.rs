//! The bench's chart: MiB/s against parts in flight, one panel per profile, drawn as SVG by
//! hand (no plotting dependency): our async and blocking clients as lines, the official SDK
//! as a dashed level, and on a WAN profile the link bound (the per-connection cap times the
//! connections) as a dotted line.

// Panel, point and legend counts are tiny: casting them to f64 loses nothing.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write as _;

use super::report::{Profile, mib};

/// One panel's data.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// The profile's heading.
    pub title: String,
    /// The profile, for the link bound.
    pub profile: Profile,
    /// (parts in flight, MiB/s) of the async client.
    pub async_rates: Vec<(usize, f64)>,
    /// (parts in flight, MiB/s) of the blocking client.
    pub blocking_rates: Vec<(usize, f64)>,
    /// The official SDK's MiB/s (one part at a time).
    pub sdk: Option<f64>,
}

const PANEL_WIDTH: f64 = 420.0;
const PANEL_HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 56.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 70.0;
const PLOT_WIDTH: f64 = PANEL_WIDTH - MARGIN_LEFT - 20.0;
const PLOT_HEIGHT: f64 = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
const ASYNC_COLOUR: &str = "#1f77b4";
const BLOCKING_COLOUR: &str = "#ff7f0e";
const SDK_COLOUR: &str = "#555555";
const LINK_COLOUR: &str = "#2ca02c";

/// The whole SVG document, panels side by side.
pub fn svg(panels: &[Panel]) -> String {
    let width = PANEL_WIDTH * panels.len().max(1) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{PANEL_HEIGHT:.0}\" \
         viewBox=\"0 0 {width:.0} {PANEL_HEIGHT:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (index, panel) in panels.iter().enumerate() {
        let _ = writeln!(
            out,
            "<g transform=\"translate({:.0},0)\">",
            PANEL_WIDTH * index as f64
        );
        draw_panel(&mut out, panel);
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// Maps parts in flight (evenly spaced categories: 1, 4, 8, 16) and MiB/s to the plot.
struct Scale {
    xs: Vec<usize>,
    top: f64,
}

impl Scale {
    fn x(&self, c: usize) -> f64 {
        let position = self.xs.iter().position(|x| *x == c).unwrap_or(0);
        let slots = self.xs.len().max(2) - 1;
        MARGIN_LEFT + PLOT_WIDTH * position as f64 / slots as f64
    }

    fn y(&self, rate: f64) -> f64 {
        MARGIN_TOP + PLOT_HEIGHT * (1.0 - rate / self.top)
    }
}

fn draw_panel(out: &mut String, panel: &Panel) {
    let mut xs: Vec<usize> = panel
        .async_rates
        .iter()
        .chain(&panel.blocking_rates)
        .map(|(c, _)| *c)
        .collect();
    xs.sort_unstable();
    xs.dedup();
    let link_points: Vec<(usize, f64)> = panel.profile.link().map_or_else(Vec::new, |link| {
        xs.iter()
            .filter_map(|c| Some((*c, mib(link.rate_for(*c as u64)?))))
            .collect()
    });
    let top = panel
        .async_rates
        .iter()
        .chain(&panel.blocking_rates)
        .chain(&link_points)
        .map(|(_, rate)| *rate)
        .chain(panel.sdk)
        .fold(1.0_f64, f64::max)
        * 1.1;
    let scale = Scale { xs, top };
    let _ = writeln!(
        out,
        "<text x=\"{:.0}\" y=\"18\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
        PANEL_WIDTH / 2.0,
        escape(&panel.title)
    );
    draw_axes(out, &scale);
    let mut legend = Vec::new();
    if !link_points.is_empty() {
        polyline(out, &link_points, &scale, LINK_COLOUR, "2,3");
        legend.push(("link bound", LINK_COLOUR, "2,3"));
    }
    if let Some(sdk) = panel.sdk {
        let _ = writeln!(
            out,
            "<path d=\"M{MARGIN_LEFT:.1},{:.1} h{PLOT_WIDTH:.1}\" stroke=\"{SDK_COLOUR}\" \
             stroke-dasharray=\"6,4\" fill=\"none\"/>",
            scale.y(sdk)
        );
        legend.push(("official SDK", SDK_COLOUR, "6,4"));
    }
    polyline(out, &panel.async_rates, &scale, ASYNC_COLOUR, "");
    legend.push(("ours, async", ASYNC_COLOUR, ""));
    polyline(out, &panel.blocking_rates, &scale, BLOCKING_COLOUR, "");
    legend.push(("ours, blocking", BLOCKING_COLOUR, ""));
    let bottom = MARGIN_TOP + PLOT_HEIGHT;
    for (index, (name, colour, dashes)) in legend.iter().enumerate() {
        let x = MARGIN_LEFT + 160.0 * (index % 2) as f64;
        let y = bottom + 44.0 + 14.0 * (index / 2) as f64;
        let _ = writeln!(
            out,
            "<path d=\"M{x:.1},{:.1} h20\" stroke=\"{colour}\" stroke-width=\"2\" \
             stroke-dasharray=\"{dashes}\"/><text x=\"{:.1}\" y=\"{y:.1}\">{name}</text>",
            y - 4.0,
            x + 24.0
        );
    }
}

/// The axes, the grid, the ticks and their labels.
fn draw_axes(out: &mut String, scale: &Scale) {
    let bottom = MARGIN_TOP + PLOT_HEIGHT;
    let _ = writeln!(
        out,
        "<path d=\"M{MARGIN_LEFT:.1},{MARGIN_TOP:.1} V{bottom:.1} H{:.1}\" stroke=\"black\" fill=\"none\"/>",
        MARGIN_LEFT + PLOT_WIDTH
    );
    for step in 0..=4 {
        let rate = scale.top / 1.1 * f64::from(step) / 4.0;
        let y = scale.y(rate);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{rate:.0}</text>\
             <path d=\"M{MARGIN_LEFT:.1},{y:.1} h{PLOT_WIDTH:.1}\" stroke=\"#dddddd\"/>",
            MARGIN_LEFT - 4.0,
            y + 4.0
        );
    }
    for c in &scale.xs {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{c}</text>",
            scale.x(*c),
            bottom + 14.0
        );
    }
    let middle = MARGIN_TOP + PLOT_HEIGHT / 2.0;
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">parts in flight</text>\
         <text x=\"12\" y=\"{middle:.1}\" transform=\"rotate(-90 12 {middle:.1})\" \
         text-anchor=\"middle\">MiB/s</text>",
        MARGIN_LEFT + PLOT_WIDTH / 2.0,
        bottom + 28.0,
    );
}

fn polyline(out: &mut String, points: &[(usize, f64)], scale: &Scale, colour: &str, dashes: &str) {
    if points.is_empty() {
        return;
    }
    let path: Vec<String> = points
        .iter()
        .map(|(c, rate)| format!("{:.1},{:.1}", scale.x(*c), scale.y(*rate)))
        .collect();
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dashes}\" \
         fill=\"none\"/>",
        path.join(" ")
    );
    for (c, rate) in points {
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
            scale.x(*c),
            scale.y(*rate)
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::link;

    #[test]
    fn a_panel_per_profile_with_every_series_and_point() {
        let panel = Panel {
            title: "WAN <slow> & co".to_owned(),
            profile: Profile::Wan(link::WAN_SLOW),
            async_rates: vec![(1, 4.5), (4, 17.0), (8, 33.0), (16, 60.0)],
            blocking_rates: vec![(1, 4.4), (4, 16.0)],
            sdk: Some(3.7),
        };
        let loopback = Panel {
            title: "loopback".to_owned(),
            profile: Profile::Loopback,
            async_rates: vec![(1, 350.0)],
            blocking_rates: Vec::new(),
            sdk: None,
        };
        let svg = svg(&[panel, loopback]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        // 7 measured points, and the WAN panel's link bound at each of its 4 x positions.
        assert_eq!(svg.matches("<circle").count(), 7 + 4);
        assert_eq!(svg.matches("<g transform").count(), 2);
        assert!(svg.contains("WAN &lt;slow&gt; &amp; co"));
        assert_eq!(svg.matches(">link bound<").count(), 1, "only the WAN panel");
        assert_eq!(svg.matches(">official SDK<").count(), 1);
        // The 16-connection link bound (76.3 MiB/s) sets the WAN panel's scale.
        assert!(svg.contains(">76<"), "{svg}");
    }
}
