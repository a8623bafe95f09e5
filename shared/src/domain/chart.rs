//! Inline SVG charts for the console: a line and stacked bars over labelled steps (days). Each
//! chart is a `<figure>` with a caption, an SVG described for screen readers, and the same
//! numbers as a table behind a disclosure, so nothing is only in the picture.

use maud::{Markup, html};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// One series of a chart: its name (legend, table header), colour and one value per label.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub values: Vec<i64>,
}

fn plot_width() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn plot_height() -> f64 {
    HEIGHT - TOP - BOTTOM
}

/// The y of `value` on a scale from `min` to `max`.
fn y_of(value: i64, min: i64, max: i64) -> f64 {
    let span = (max - min).max(1) as f64;
    TOP + plot_height() * (1.0 - (value - min) as f64 / span)
}

/// Axes: the value range on the left, the first and last labels below.
fn axes(labels: &[String], min: i64, max: i64) -> Markup {
    let bottom = HEIGHT - BOTTOM;
    html! {
        line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(bottom) stroke="#57606a" {}
        line x1=(LEFT) y1=(bottom) x2=(WIDTH - RIGHT) y2=(bottom) stroke="#57606a" {}
        text x=(LEFT - 6.0) y=(TOP + 10.0) text-anchor="end" font-size="12" fill="#24292f" { (max) }
        text x=(LEFT - 6.0) y=(bottom) text-anchor="end" font-size="12" fill="#24292f" { (min) }
        @if let Some(first) = labels.first() {
            text x=(LEFT) y=(HEIGHT - 6.0) font-size="12" fill="#24292f" { (first) }
        }
        @if labels.len() > 1 {
            text x=(WIDTH - RIGHT) y=(HEIGHT - 6.0) text-anchor="end" font-size="12" fill="#24292f" {
                (labels[labels.len() - 1])
            }
        }
    }
}

fn legend(series: &[Series]) -> Markup {
    html! {
        ul.legend {
            @for s in series {
                li { svg width="12" height="12" aria-hidden="true" { rect width="12" height="12" fill=(s.colour) {} } " " (s.name) }
            }
        }
    }
}

fn data_table(caption: &str, labels: &[String], series: &[Series]) -> Markup {
    html! {
        details {
            summary { "Numbers of “" (caption) "”" }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Day" } @for s in series { th scope="col" { (s.name) } } } }
                    tbody {
                        @for (i, label) in labels.iter().enumerate() {
                            tr { th scope="row" { (label) } @for s in series { td { (s.values.get(i).copied().unwrap_or(0)) } } }
                        }
                    }
                }
            }
        }
    }
}

fn figure(
    id: &str,
    caption: &str,
    summary: &str,
    body: Markup,
    series: &[Series],
    labels: &[String],
) -> Markup {
    html! {
        figure.chart id=(id) {
            figcaption id={ (id) "-caption" } { (caption) }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                aria-labelledby={ (id) "-caption " (id) "-summary" } {
                title id={ (id) "-summary" } { (summary) }
                (body)
            }
            (legend(series))
            (data_table(caption, labels, series))
        }
    }
}

/// A line over `labels` (at least one); `summary` describes it in words.
pub fn line_chart(
    id: &str,
    caption: &str,
    summary: &str,
    labels: &[String],
    series: Series,
) -> Markup {
    let min = series.values.iter().copied().min().unwrap_or(0).min(0);
    let max = series.values.iter().copied().max().unwrap_or(0).max(1);
    let step = plot_width() / (labels.len().max(2) - 1) as f64;
    let points: Vec<String> = series
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", LEFT + step * i as f64, y_of(*v, min, max)))
        .collect();
    let body = html! {
        (axes(labels, min, max))
        polyline points=(points.join(" ")) fill="none" stroke=(series.colour) stroke-width="2" {}
    };
    figure(
        id,
        caption,
        summary,
        body,
        std::slice::from_ref(&series),
        labels,
    )
}

/// Stacked bars, one per label; each series is one colour in every bar.
pub fn bar_chart(
    id: &str,
    caption: &str,
    summary: &str,
    labels: &[String],
    series: &[Series],
) -> Markup {
    let totals: Vec<i64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0).max(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let slot = plot_width() / labels.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let mut rects = Vec::new();
    for i in 0..labels.len() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut below = 0;
        for s in series {
            let v = s.values.get(i).copied().unwrap_or(0).max(0);
            if v > 0 {
                let top = y_of(below + v, 0, max);
                rects.push((x, top, y_of(below, 0, max) - top, s.colour));
            }
            below += v;
        }
    }
    let body = html! {
        (axes(labels, 0, max))
        @for (x, y, height, colour) in rects {
            rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{bar:.1}"))
                height=(format!("{height:.1}")) fill=(colour) {}
        }
    };
    figure(id, caption, summary, body, series, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: usize) -> Vec<String> {
        (1..=n).map(|d| format!("2026-11-{d:02}")).collect()
    }

    #[test]
    fn a_line_has_one_point_per_label_and_its_numbers_in_a_table() {
        let html = line_chart(
            "m",
            "Members",
            "2 members now",
            &days(3),
            Series {
                name: "Members",
                colour: "#0969da",
                values: vec![0, 1, 2],
            },
        )
        .into_string();
        let points = html
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 3);
        assert!(
            points.starts_with("48.0,"),
            "first point on the y axis: {points}"
        );
        assert!(html.contains("<td>2</td>"));
        assert!(html.contains("aria-labelledby=\"m-caption m-summary\""));
    }

    #[test]
    fn bars_stack_and_skip_zeros() {
        let html = bar_chart(
            "b",
            "Changes",
            "3 added, 1 removed",
            &days(2),
            &[
                Series {
                    name: "Added",
                    colour: "#1a7f37",
                    values: vec![2, 1],
                },
                Series {
                    name: "Removed",
                    colour: "#cf222e",
                    values: vec![0, 1],
                },
            ],
        )
        .into_string();
        assert_eq!(
            html.matches("<rect x=").count(),
            3,
            "one rect per non-zero value"
        );
        // The tallest bar (2) spans the whole plot height.
        assert!(html.contains(&format!("height=\"{:.1}\"", plot_height())));
    }

    #[test]
    fn text_is_escaped() {
        let html = bar_chart("x", "<b>", "<i>", &["<d>".to_owned()], &[]).into_string();
        assert!(!html.contains("<b>") && !html.contains("<d>") && html.contains("&lt;b&gt;"));
    }
}
