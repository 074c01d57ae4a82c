//! Small bar charts drawn on the server as SVG (no JavaScript, nothing fetched): the
//! template gets every bar's geometry and label, and draws `<rect>`s.

use serde::Serialize;
use tenant_master::overview::Hour;

/// Chart area in SVG units; the SVG scales to its box.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 120.0;

#[derive(Debug, Serialize)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// What a reader sees on hover (`<title>`) and what a screen reader reads.
    pub label: String,
    /// Its colour (an SVG attribute: the panel's CSP allows no inline style).
    pub fill: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Chart {
    pub width: f64,
    pub height: f64,
    pub bars: Vec<Bar>,
    /// The largest value, for the axis label.
    pub max: i64,
    /// Axis labels under the bars: (x, text).
    pub ticks: Vec<(f64, String)>,
}

/// The last day's hours: finished jobs up, failed attempts down from a middle line.
pub fn hours(hours: &[Hour]) -> Chart {
    let max = hours.iter().map(|h| h.done.max(h.failed)).max().unwrap_or(0).max(1);
    let slot = WIDTH / hours.len().max(1) as f64;
    let half = HEIGHT / 2.0;
    let scale = |n: i64| (n as f64 / max as f64) * (half - 2.0);
    let mut bars = Vec::new();
    let mut ticks = Vec::new();
    for (i, h) in hours.iter().enumerate() {
        let x = i as f64 * slot + 1.0;
        let hour = h.hour.format("%H:00").to_string();
        let up = scale(h.done);
        bars.push(Bar { x, y: half - up, width: slot - 2.0, height: up, label: format!("{hour}: {} done", h.done), fill: DONE });
        let down = scale(h.failed);
        bars.push(Bar { x, y: half, width: slot - 2.0, height: down, label: format!("{hour}: {} failed", h.failed), fill: FAILED });
        if i % 6 == 0 {
            ticks.push((x, hour));
        }
    }
    Chart { width: WIDTH, height: HEIGHT, bars, max, ticks }
}

/// Tenants per product, one bar per product split by plan (stacked).
pub fn tenants_by_product_and_plan(counts: &[(String, String, i64)]) -> Chart {
    let mut products: Vec<&str> = counts.iter().map(|(p, _, _)| p.as_str()).collect();
    products.dedup();
    let total = |product: &str| counts.iter().filter(|(p, _, _)| p == product).map(|(_, _, n)| n).sum::<i64>();
    let max = products.iter().map(|p| total(p)).max().unwrap_or(0).max(1);
    let row = 28.0;
    let label_room = 140.0;
    let height = (products.len().max(1) as f64) * row;
    let mut bars = Vec::new();
    let mut ticks = Vec::new();
    for (i, product) in products.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let mut x = label_room;
        for (kind, (_, plan, n)) in counts.iter().filter(|(p, _, _)| p == product).enumerate() {
            let width = (*n as f64 / max as f64) * (WIDTH - label_room - 60.0);
            bars.push(Bar {
                x,
                y,
                width,
                height: row - 8.0,
                label: format!("{product}, {plan}: {n}"),
                fill: PLAN_FILLS[kind % PLAN_FILLS.len()],
            });
            x += width;
        }
        ticks.push((y + row / 2.0, format!("{product} ({})", total(product))));
    }
    Chart { width: WIDTH, height, bars, max, ticks }
}

const DONE: &str = "#1a7f37";
const FAILED: &str = "#a40e26";
/// Colours of a product's plans, in the order they are stacked (each bar also has its
/// label as a title and in the legend: colour is never the only cue).
const PLAN_FILLS: &[&str] = &["#0b57d0", "#7a5af5", "#1a7f37", "#bf8700", "#a40e26", "#57606a"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value() {
        let counts = vec![("demo".into(), "free".into(), 30), ("demo".into(), "pro".into(), 10), ("shop".into(), "free".into(), 20)];
        let chart = tenants_by_product_and_plan(&counts);
        assert_eq!(chart.max, 40);
        assert_eq!(chart.bars.len(), 3);
        // demo's two plans end where a 40-tenant bar ends; shop's is half that long.
        let full = chart.bars[0].width + chart.bars[1].width;
        assert!((chart.bars[2].width * 2.0 - full).abs() < 1e-9);
        assert_eq!(chart.ticks[1].1, "shop (20)");
    }
}
