//! SVG plots for the report (plotters' SVG backend): for sweeps (rate,
//! users, nodes) one line per plugin through the medians, a bar from min
//! to max at each point; for categories (servers) grouped bars, one per
//! plugin, with the same min-max bar.

use super::report::{Plot, Spread};
use plotters::prelude::*;

/// `series`: (plugin, [(x, spread)]) to an SVG document.
pub fn svg(p: &Plot, series: &[(String, Vec<(f64, Spread)>)]) -> Result<String, String> {
    let mut out = String::new();
    match p.categories.is_empty() {
        true => draw(&mut out, p, series),
        false => draw_bars(&mut out, p, series),
    }
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The y value drawn: log10 on a log axis.
fn y(p: &Plot, v: f64) -> f64 {
    if p.log_y { v.max(1e-3).log10() } else { v }
}

fn bounds(p: &Plot, series: &[(String, Vec<(f64, Spread)>)]) -> ((f64, f64), (f64, f64)) {
    let pts = || series.iter().flat_map(|(_, s)| s.iter());
    let (x0, x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
    let (y0, y1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (_, s)| (a.min(y(p, s.min)), b.max(y(p, s.max))));
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let xpad = ((x1 - x0) * 0.05).max(0.5);
    let y0 = if p.log_y { y0 - 0.1 } else { y0.min(0.0) };
    ((x0 - xpad, x1 + xpad), (y0, y1 + (y1 - y0).abs().max(1e-3) * 0.1))
}

fn draw(out: &mut String, p: &Plot, series: &[(String, Vec<(f64, Spread)>)]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, (720, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let ((x0, x1), (y0, y1)) = bounds(p, series);
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let log = p.log_y;
    let fmt_y = move |v: &f64| if log { super::report::num(10f64.powf(*v)) } else { super::report::num(*v) };
    chart.configure_mesh().x_desc(p.x_label.as_str()).y_desc(p.y_label.as_str()).y_label_formatter(&fmt_y).draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line = pts.iter().map(|(x, s)| (*x, y(p, s.median)));
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 18, ly)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|(x, s)| ErrorBar::new_vertical(*x, y(p, s.min), y(p, s.median), y(p, s.max), color.filled(), 6)))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
    root.present()?;
    Ok(())
}

/// Grouped bars: category c spans x in (c - 0.5, c + 0.5), each plugin a
/// bar of its own within it; the axis names the categories.
fn draw_bars(out: &mut String, p: &Plot, series: &[(String, Vec<(f64, Spread)>)]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, (720, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = p.categories.len() as f64;
    let top = series.iter().flat_map(|(_, s)| s.iter()).fold(0.0f64, |m, (_, s)| m.max(s.max));
    let mut chart = ChartBuilder::on(&root).margin(12).x_label_area_size(40).y_label_area_size(64).build_cartesian_2d(0.5..n + 0.5, 0.0..(top * 1.15).max(1e-3))?;
    let names = p.categories.clone();
    let name = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 0.01 && i >= 1.0 { names.get(i as usize - 1).cloned().unwrap_or_default() } else { String::new() }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(p.categories.len())
        .x_label_formatter(&name)
        .x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .y_label_formatter(&|v: &f64| super::report::num(*v))
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let left = |x: f64| x - 0.4 + i as f64 * width;
        chart
            .draw_series(pts.iter().map(|(x, s)| Rectangle::new([(left(*x), 0.0), (left(*x) + width * 0.9, s.median)], color.filled())))?
            .label(label.as_str())
            .legend(move |(lx, ly)| Rectangle::new([(lx, ly - 5), (lx + 12, ly + 5)], color.filled()));
        chart.draw_series(pts.iter().map(|(x, s)| ErrorBar::new_vertical(left(*x) + width * 0.45, s.min, s.median, s.max, BLACK.filled(), 4)))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::UpperRight).draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(v: f64) -> Spread {
        Spread { min: v - 1.0, median: v, max: v + 1.0, n: 3 }
    }

    #[test]
    fn categories_are_grouped_bars_named_on_the_axis() {
        let p = Plot {
            title: "t".into(),
            group: "per server".into(),
            x_label: "server".into(),
            y_label: "%".into(),
            metric: "req_share".into(),
            log_y: false,
            categories: vec!["s1-fast".into(), "s2".into(), "s3-small".into()],
        };
        let series = vec![
            ("round-robin".to_string(), vec![(1.0, spread(33.0)), (2.0, spread(33.0)), (3.0, spread(33.0))]),
            ("weighted".to_string(), vec![(1.0, spread(50.0)), (2.0, spread(33.0)), (3.0, spread(17.0))]),
        ];
        let bars = svg(&p, &series).unwrap();
        for name in ["s1-fast", "s2", "s3-small", "round-robin", "weighted"] {
            assert!(bars.contains(name), "{name} is on the plot");
        }
        let lines = svg(&Plot { categories: Vec::new(), ..p }, &series).unwrap();
        assert!(bars.matches("<rect").count() >= lines.matches("<rect").count() + 6, "a bar per plugin and server");
        assert!(!lines.contains("s1-fast"), "a sweep has numbers on its axis");
    }
}
