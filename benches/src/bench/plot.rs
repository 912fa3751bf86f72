//! SVG line plots for the report (plotters' SVG backend): one line per
//! plugin through the medians, a bar from min to max at each point.

use super::report::{Plot, Spread};
use plotters::prelude::*;

/// `series`: (plugin, [(x, spread)]) to an SVG document.
pub fn svg(p: &Plot, series: &[(String, Vec<(f64, Spread)>)]) -> Result<String, String> {
    let mut out = String::new();
    draw(&mut out, p, series).map_err(|e| e.to_string())?;
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
