//! SVG line charts with axes, tick labels, axis titles and a legend: the one chart type the
//! pages need (latency per token, memory vs length, logit drift).

use leptos::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (e.g. f16 next to f32).
    pub dashed: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, color: &'static str, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), color, points, dashed: false }
    }
}

/// The series colours, defined once in `style/tokens.css` (colours that stay apart on white).
pub const PALETTE: [&str; 10] = [
    "var(--series-1)",
    "var(--series-2)",
    "var(--series-3)",
    "var(--series-4)",
    "var(--series-5)",
    "var(--series-6)",
    "var(--series-7)",
    "var(--series-8)",
    "var(--series-9)",
    "var(--series-10)",
];

/// A chart's drawing width in CSS pixels. Charts are drawn at this size, never stretched, and
/// shrink only in a window narrower than one chart: so their text keeps the stylesheet's size
/// (11 px and up), and two fit side by side in a 1280-pixel window.
pub const CHART_W: f64 = 500.0;
const W: f64 = CHART_W;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 28.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

/// About five round tick values covering `min..=max` (1, 2 or 5 times a power of ten apart),
/// starting at a multiple of the step at or below `min`.
pub fn ticks(min: f64, max: f64) -> Vec<f64> {
    let span = max - min;
    if span <= 0.0 || !span.is_finite() {
        return vec![min, min + 1.0];
    }
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (min / step).floor();
    let count = (max / step).ceil() - first;
    (0..=count as usize).map(|i| (first + i as f64) * step).collect()
}

pub fn label(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// For each series, the earlier one it coincides with (the same points, to half a percent):
/// drawn plainly, it would hide under that one.
fn hidden_under(series: &[Series]) -> Vec<Option<usize>> {
    let close = |a: f64, b: f64| (a - b).abs() <= 0.005 * a.abs().max(b.abs()).max(1e-12);
    let same = |a: &Series, b: &Series| {
        a.points.len() == b.points.len()
            && a.points.iter().zip(&b.points).all(|(p, q)| close(p.0, q.0) && close(p.1, q.1))
    };
    series.iter().enumerate().map(|(i, s)| (0..i).find(|&j| !s.points.is_empty() && same(s, &series[j]))).collect()
}

/// A line chart; the y axis starts at 0, the x axis at 0 or (with `x_from_data`) at the
/// smallest x, and both grow to fit every series.
#[component]
pub fn LineChart(
    #[prop(into)] title: String,
    #[prop(into)] x_label: String,
    #[prop(into)] y_label: String,
    #[prop(into)] series: Signal<Vec<Series>>,
    #[prop(optional, into)] testid: String,
    #[prop(optional)] x_from_data: bool,
) -> impl IntoView {
    let plot = move || {
        let series = series.get();
        let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let x_min = if x_from_data { xs().fold(f64::INFINITY, f64::min).min(xs().fold(0.0, f64::max)) } else { 0.0 };
        let x_max = xs().fold(0.0, f64::max);
        let y_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
        let (xt, yt) = (ticks(x_min, x_max), ticks(0.0, y_max));
        let (x_low, x_top, y_top) = (xt[0], *xt.last().unwrap_or(&1.0), *yt.last().unwrap_or(&1.0));
        let sx = move |x: f64| LEFT + (x - x_low) / (x_top - x_low).max(f64::MIN_POSITIVE) * (W - LEFT - RIGHT);
        let sy = move |y: f64| H - BOTTOM - y / y_top.max(f64::MIN_POSITIVE) * (H - TOP - BOTTOM);
        let grid_y = yt
            .iter()
            .map(|&v| {
                view! {
                    <line x1=LEFT x2=W - RIGHT y1=sy(v) y2=sy(v) class="grid"/>
                    <text x=LEFT - 6.0 y=sy(v) + 4.0 text-anchor="end" class="tick">{label(v)}</text>
                }
            })
            .collect_view();
        let grid_x = xt
            .iter()
            .map(|&v| view! { <text x=sx(v) y=H - BOTTOM + 16.0 text-anchor="middle" class="tick">{label(v)}</text> })
            .collect_view();
        // A series on top of an earlier one is drawn dashed over it, and its legend says so.
        let hidden = hidden_under(&series);
        let dash = |s: &Series, under: Option<usize>| if s.dashed || under.is_some() { "6 4" } else { "" };
        let lines = series
            .iter()
            .zip(&hidden)
            .map(|(s, &under)| {
                let points = s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect::<Vec<_>>().join(" ");
                let dots = if s.points.len() <= 64 {
                    let fill = format!("fill:{}", s.color);
                    s.points.iter().map(|&(x, y)| view! { <circle cx=sx(x) cy=sy(y) r="2.5" style=fill.clone()/> }).collect_view().into_any()
                } else {
                    ().into_any()
                };
                view! {
                    <polyline points=points fill="none" style=format!("stroke:{}", s.color) stroke-width="2" stroke-dasharray=dash(s, under) data-series=s.name.clone()/>
                    {dots}
                }
            })
            .collect_view();
        let names: Vec<String> = series
            .iter()
            .zip(&hidden)
            .map(|(s, under)| match under {
                Some(j) => format!("{} (= {} here)", s.name, series[*j].name),
                None => s.name.clone(),
            })
            .collect();
        // The legend sits on a pale card so lines under it stay apart from its text.
        let widest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as f64;
        let legend_bg = (!series.is_empty()).then(|| {
            let width = (42.0 + 6.8 * widest).min(W - LEFT - RIGHT - 12.0);
            view! { <rect x=LEFT + 6.0 y=TOP - 4.0 width=width height=18.0 * series.len() as f64 + 4.0 class="legend-bg"/> }
        });
        let legend = series
            .iter()
            .zip(&hidden)
            .zip(names)
            .enumerate()
            .map(|(i, ((s, &under), name))| {
                let y = TOP + 6.0 + 18.0 * i as f64;
                view! {
                    <line x1=LEFT + 12.0 x2=LEFT + 36.0 y1=y y2=y style=format!("stroke:{}", s.color) stroke-width="3" stroke-dasharray=dash(s, under)/>
                    <text x=LEFT + 42.0 y=y + 4.0 class="legend">{name}</text>
                }
            })
            .collect_view();
        view! {
            {grid_y}
            {grid_x}
            <line x1=LEFT x2=LEFT y1=TOP y2=H - BOTTOM class="axis"/>
            <line x1=LEFT x2=W - RIGHT y1=H - BOTTOM y2=H - BOTTOM class="axis"/>
            {lines}
            {legend_bg}
            {legend}
        }
    };
    let aria = format!("{title}: {y_label} against {x_label}. The numbers are in the table under the chart.");
    let (x_name, y_name) = (x_label.clone(), y_label.clone());
    // The text alternative: every point of every series, folded away under the chart.
    let numbers = move || {
        series.with(|series| {
            series
                .iter()
                .map(|s| {
                    let points = s
                        .points
                        .iter()
                        .map(|&(x, y)| format!("({}, {})", label(x), label(y)))
                        .collect::<Vec<_>>()
                        .join(" ");
                    view! { <tr><th scope="row">{s.name.clone()}</th><td>{points}</td></tr> }
                })
                .collect_view()
        })
    };
    view! {
        <figure class="chart" data-testid=testid>
            <figcaption>{title.clone()}</figcaption>
            <svg width=W height=H viewBox=format!("0 0 {W} {H}") role="img" aria-label=aria>
                {plot}
                <text x=(LEFT + W - RIGHT) / 2.0 y=H - 6.0 text-anchor="middle" class="axis-title">{x_label}</text>
                <text x="14" y=(TOP + H - BOTTOM) / 2.0 text-anchor="middle" class="axis-title"
                    transform=format!("rotate(-90 14 {})", (TOP + H - BOTTOM) / 2.0)>{y_label}</text>
            </svg>
            <details class="chart-data">
                <summary>"The numbers"</summary>
                <table><thead><tr><th scope="col">"series"</th><th scope="col">{format!("({x_name}, {y_name})")}</th></tr></thead>
                    <tbody>{numbers}</tbody></table>
            </details>
        </figure>
    }
}
