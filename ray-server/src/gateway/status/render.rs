//! The status page as HTML: figures, charts as inline SVG, models and refusals, rendered from
//! the status JSON.

use std::fmt::Write as _;

use serde_json::Value;

/// The page: HTML, CSS and script in one file, embedded at build time.
pub(super) const PAGE: &str = include_str!("page.html");

/// The charts the page draws: (id, title, unit, series names).
pub(super) const CHARTS: [(&str, &str, &str, [&str; 2]); 5] = [
    ("wait", "Queue wait", "ms", ["p50", "p99"]),
    ("latency", "Latency", "ms", ["p50", "p99"]),
    ("tokens", "Tokens / s", "", ["perSecond", ""]),
    ("queue", "Queue and in flight", "", ["waiting", "inFlight"]),
    (
        "traffic",
        "Requests and errors per 10 s",
        "",
        ["requests", "errors"],
    ),
];

pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page, rendered from `/status.json`'s value (`Value::Null` when locked). The markup
/// matches what the script renders from the same JSON.
pub(super) fn render(status: &Value, locked: bool) -> String {
    let mut body = String::new();
    if !locked {
        render_figures(&mut body, status);
        render_charts(&mut body, status);
        render_models(&mut body, status);
        render_refusals(&mut body, status);
    }
    let title = status["service"].as_str().unwrap_or("ray");
    let updated = status["generatedAt"].as_str().unwrap_or("");
    let state = status["status"].as_str().unwrap_or("locked");
    PAGE.replace("{{service}}", &escape(title))
        .replace("{{state}}", &escape(state))
        .replace("{{updated}}", &escape(updated))
        .replace("{{auth}}", if locked { "required" } else { "ok" })
        .replace("{{body}}", &body)
}

fn render_figures(out: &mut String, status: &Value) {
    let Some(fields) = status["fields"].as_object() else {
        return;
    };
    let mut section = "";
    for (id, field) in fields {
        let this = field["section"].as_str().unwrap_or("");
        if this != section {
            if !section.is_empty() {
                out.push_str("</div></section>");
            }
            let _ = write!(
                out,
                "<section><h2>{}</h2><div class=\"figs\">",
                escape(this)
            );
            section = this;
        }
        let help = escape(field["help"].as_str().unwrap_or(""));
        let _ = write!(
            out,
            "<div class=\"fig\" tabindex=\"0\" title=\"{help}\"><span class=\"k\">{}</span>\
             <span class=\"v\" data-field=\"{}\">{}</span><span class=\"h\">{help}</span></div>",
            escape(field["label"].as_str().unwrap_or("")),
            escape(id),
            escape(field["text"].as_str().unwrap_or("")),
        );
    }
    if !section.is_empty() {
        out.push_str("</div></section>");
    }
}

fn render_charts(out: &mut String, status: &Value) {
    let _ = write!(
        out,
        "<section><h2>Last 15 minutes</h2><div class=\"charts\" title=\"{}\">",
        escape(status["help"]["charts"].as_str().unwrap_or(""))
    );
    for (id, title, unit, series) in CHARTS {
        let data = &status["charts"][id];
        let lines: Vec<Vec<Option<f64>>> = series
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                data[*s]
                    .as_array()
                    .map(|a| a.iter().map(Value::as_f64).collect())
                    .unwrap_or_default()
            })
            .collect();
        let legend = series
            .iter()
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| format!("<b class=\"l{i}\">{s}</b>"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            out,
            "<figure><figcaption>{title} <span class=\"legend\">{}</span></figcaption>\
             <svg data-chart=\"{id}\" viewBox=\"0 0 300 80\" preserveAspectRatio=\"none\" \
             role=\"img\" aria-label=\"{title}\">{}</svg></figure>",
            legend,
            chart_svg(&lines, unit)
        );
    }
    out.push_str("</div></section>");
}

/// The inside of a chart's SVG: one polyline per series over a fixed 90-point width, scaled
/// to the largest value, which is written in the corner. Same drawing as the script's.
fn chart_svg(lines: &[Vec<Option<f64>>], unit: &str) -> String {
    let max = lines
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |a, b| a.max(*b));
    let scale = if max > 0.0 { max } else { 1.0 };
    // The x axis spans the history there is (up to 15 minutes), newest on the right.
    let points = lines.iter().map(Vec::len).max().unwrap_or(0).max(2);
    let width = (points - 1) as f64;
    let mut out = String::new();
    for (index, line) in lines.iter().enumerate() {
        let offset = points.saturating_sub(line.len());
        let mut points = String::new();
        for (i, value) in line.iter().enumerate() {
            if let Some(v) = value {
                let x = (offset + i) as f64 / width * 300.0;
                // The top 16 units are left to the label.
                let y = 77.0 - v / scale * 61.0;
                let _ = write!(points, "{x:.1},{y:.1} ");
            }
        }
        let _ = write!(
            out,
            "<polyline class=\"s{index}\" fill=\"none\" points=\"{}\"/>",
            points.trim_end()
        );
    }
    let label = if max > 0.0 {
        format!(
            "max {}{}{}",
            fmt_max(max),
            if unit.is_empty() { "" } else { " " },
            unit
        )
    } else {
        "no data yet".into()
    };
    let _ = write!(out, "<text x=\"4\" y=\"12\">{}</text>", escape(&label));
    out
}

fn fmt_max(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn render_models(out: &mut String, status: &Value) {
    let _ = write!(
        out,
        "<section><h2 title=\"{}\">Models</h2><div class=\"scroll\"><table data-block=\"models\">\
         <thead><tr><th>Model</th><th>State</th><th>Backend</th><th>Context</th><th>Queue</th>\
         <th>In flight</th><th>Failures</th></tr></thead><tbody>",
        escape(status["help"]["models"].as_str().unwrap_or(""))
    );
    for model in status["models"].as_array().into_iter().flatten() {
        let cooldown = model["cooldownRemainingMs"]
            .as_u64()
            .map(|ms| format!(", cooldown {} s", ms.div_ceil(1000)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{}{}</td><td class=\"st-{}\" title=\"{}\">{}</td><td>{}</td><td>{}</td>\
             <td>{} / {}</td><td>{} / {}</td><td>{}{}</td></tr>",
            escape(model["id"].as_str().unwrap_or("")),
            if model["default"].as_bool() == Some(true) {
                " <small>default</small>"
            } else {
                ""
            },
            escape(model["state"].as_str().unwrap_or("")),
            escape(model["reason"].as_str().unwrap_or("")),
            escape(model["state"].as_str().unwrap_or("")),
            escape(model["backend"].as_str().unwrap_or("")),
            model["contextWindow"],
            model["queueDepth"],
            model["maxQueue"],
            model["inFlight"],
            model["concurrency"],
            model["failures"],
            cooldown,
        );
    }
    out.push_str("</tbody></table></div></section>");
}

fn render_refusals(out: &mut String, status: &Value) {
    let _ = write!(
        out,
        "<section class=\"two\"><div><h2 title=\"{}\">Refusals by code, last hour</h2>\
         <table data-block=\"refusals\"><tbody>",
        escape(status["help"]["refusals"].as_str().unwrap_or(""))
    );
    let refusals = status["refusals"].as_array().cloned().unwrap_or_default();
    if refusals.is_empty() {
        out.push_str("<tr><td>none</td></tr>");
    }
    for r in &refusals {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
            escape(r["code"].as_str().unwrap_or("")),
            r["count"]
        );
    }
    let _ = write!(
        out,
        "</tbody></table></div><div><h2 title=\"{}\">Recent errors</h2>\
         <table data-block=\"recentErrors\"><tbody>",
        escape(status["help"]["recentErrors"].as_str().unwrap_or(""))
    );
    let errors = status["recentErrors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if errors.is_empty() {
        out.push_str("<tr><td>none</td></tr>");
    }
    for e in &errors {
        let at = e["at"].as_str().unwrap_or("");
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{} {}</td><td class=\"n\">&times;{}</td></tr>",
            escape(at.get(11..19).unwrap_or(at)),
            e["status"],
            escape(e["code"].as_str().unwrap_or("")),
            e["count"]
        );
    }
    out.push_str("</tbody></table></div></section>");
}
