//! `loadgen plot`: draws the fan-out curve from stored results (the JSON lines `scripts/bench`
//! writes) as one SVG: deliveries/s and p99 latency against subscriber count, one line per target
//! (Switchyard beside the baseline, and Socket.IO's runs, which use its own protocol, on the native
//! plot). Only as-fast-as-possible fan-out runs of the chosen protocol and publish path
//! (`publish_over`; results from before that field are `http`) are drawn; where a target ran one
//! subscriber count more than once, the median is drawn.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::cli::PlotArgs;

/// Size of the whole picture (two charts side by side).
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 460;
/// Line colours by order of first appearance of a target.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// One target's points: subscribers → (deliveries/s, p99 ms), medians over repeated runs.
type Series = BTreeMap<u64, (f64, f64)>;
/// One target's runs before the medians: subscribers → every (deliveries/s, p99 ms) measured.
type Runs = BTreeMap<u64, Vec<(f64, f64)>>;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `1234567` → `1,234,567`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Reads every fan-out run of `protocol` published over `publish_over` from `files`, grouped by
/// target in order of appearance.
fn read_series(
    files: &[String],
    protocol: &str,
    publish_over: &str,
) -> Result<Vec<(String, Series)>, String> {
    let mut raw: Vec<(String, Runs)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let r: Value =
                serde_json::from_str(line).map_err(|e| format!("{file}:{}: {e}", n + 1))?;
            let windowed_fanout = r["scenario"] == "fanout" && r["rate"].is_null();
            let over = r["publish_over"].as_str().unwrap_or("http");
            // The Socket.IO target runs the native cases in its own protocol.
            let same_protocol =
                r["protocol"] == protocol || (protocol == "native" && r["protocol"] == "socketio");
            if !windowed_fanout || !same_protocol || over != publish_over {
                continue;
            }
            let (Some(subs), Some(rate), Some(p99)) = (
                r["subscribers"].as_u64(),
                r["deliveries_per_sec"].as_f64(),
                r["latency_ms"]["p99"].as_f64(),
            ) else {
                continue;
            };
            let target = r["target"].as_str().unwrap_or("?").to_owned();
            let slot = match raw.iter().position(|(t, _)| *t == target) {
                Some(i) => i,
                None => {
                    raw.push((target, BTreeMap::new()));
                    raw.len() - 1
                }
            };
            raw[slot].1.entry(subs).or_default().push((rate, p99));
        }
    }
    Ok(raw
        .into_iter()
        .map(|(target, points)| {
            let series = points
                .into_iter()
                .map(|(subs, runs)| {
                    let rates = runs.iter().map(|r| r.0).collect();
                    let p99s = runs.iter().map(|r| r.1).collect();
                    (subs, (median(rates), median(p99s)))
                })
                .collect();
            (target, series)
        })
        .collect())
}

/// Draws one chart: `value` of every series against subscriber count, log-scaled x.
fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_label: &str,
    series: &[(String, Series)],
    value: fn(&(f64, f64)) -> f64,
    log_y: bool,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let xs = series.iter().flat_map(|(_, s)| s.keys().copied());
    let (x_min, x_max) = xs.fold((u64::MAX, 0), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, s)| s.values().map(value))
        .collect();
    let y_max = ys.iter().copied().fold(0.0, f64::max) * 1.15;
    let y_min = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let x_range = (x_min as f64 / 1.5)..(x_max as f64 * 1.5);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80);
    let thousands = |v: &f64| group_thousands(v.round() as u64);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("subscribers on one channel (log scale)")
                .y_desc(y_label)
                .x_label_formatter(&thousands)
                .y_label_formatter(&|v: &f64| {
                    if *v >= 1000.0 {
                        thousands(v)
                    } else {
                        format!("{v}")
                    }
                })
                .draw()
                .map_err(err)?;
            for (i, (target, points)) in series.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                let data: Vec<(f64, f64)> =
                    points.iter().map(|(x, v)| (*x as f64, value(v))).collect();
                chart
                    .draw_series(LineSeries::new(data.clone(), colour.stroke_width(2)))
                    .map_err(err)?
                    .label(target.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(data.iter().map(|p| Circle::new(*p, 4, colour.filled())))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(err)?;
        }};
    }
    if log_y {
        let range = (y_min / 1.5).max(0.01)..(y_max * 1.5);
        finish!(builder
            .build_cartesian_2d(x_range.log_scale(), range.log_scale())
            .map_err(err)?);
    } else {
        finish!(builder
            .build_cartesian_2d(x_range.log_scale(), 0.0..y_max)
            .map_err(err)?);
    }
    Ok(())
}

/// Runs `loadgen plot`.
pub fn run(args: &PlotArgs) -> Result<String, String> {
    let series = read_series(&args.results, &args.protocol, &args.publish_over)?;
    if series.iter().all(|(_, s)| s.is_empty()) {
        return Err(format!(
            "no windowed fan-out runs of protocol {} published over {} in {:?}",
            args.protocol, args.publish_over, args.results
        ));
    }
    let root = SVGBackend::new(Path::new(&args.out), (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    draw_chart(
        &left,
        &format!(
            "fan-out throughput ({}, publishing over {})",
            args.protocol, args.publish_over
        ),
        "deliveries per second",
        &series,
        |v| v.0,
        false,
    )?;
    draw_chart(
        &right,
        &format!(
            "fan-out p99 latency ({}, publishing over {})",
            args.protocol, args.publish_over
        ),
        "p99 latency, ms (log scale)",
        &series,
        |v| v.1,
        true,
    )?;
    root.present().map_err(|e| e.to_string())?;
    let mut summary = String::new();
    for (target, points) in &series {
        for (subs, (rate, p99)) in points {
            summary += &format!("{target}\t{subs}\t{rate:.0}\t{p99:.2}\n");
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1_400_000), "1,400,000");
    }

    #[test]
    fn draws_one_line_per_target_from_fanout_runs_only() {
        let dir = tempdir();
        let results = dir.join("r.jsonl");
        let line = |target: &str, subs: u64, rate: f64, p99: f64, scenario: &str| {
            format!(
                r#"{{"target":"{target}","scenario":"{scenario}","protocol":"native","rate":null,"subscribers":{subs},"deliveries_per_sec":{rate},"latency_ms":{{"p99":{p99}}}}}"#
            )
        };
        let text = [
            line("baseline", 100, 1000.0, 2.0, "fanout"),
            line("baseline", 1000, 3000.0, 9.0, "fanout"),
            line("switchyard", 100, 900.0, 3.0, "fanout"),
            line("switchyard", 1000, 2000.0, 12.0, "fanout"),
            line("switchyard", 1000, 2400.0, 14.0, "fanout"),
            line("switchyard", 1000, 5.0, 1.0, "targeted"),
            line("switchyard", 1000, 7.0, 1.0, "fanout").replacen(
                '{',
                r#"{"publish_over":"ws","#,
                1,
            ),
        ]
        .join("\n");
        std::fs::write(&results, text).unwrap();
        let out = dir.join("plot.svg");
        let summary = run(&PlotArgs {
            results: vec![results.to_string_lossy().into_owned()],
            out: out.to_string_lossy().into_owned(),
            protocol: "native".to_owned(),
            publish_over: "http".to_owned(),
        })
        .unwrap();
        assert_eq!(
            summary,
            "baseline\t100\t1000\t2.00\nbaseline\t1000\t3000\t9.00\nswitchyard\t100\t900\t3.00\nswitchyard\t1000\t2200\t13.00\n"
        );
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains("switchyard") && svg.contains("baseline"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "loadgen-plot-{}-{}",
            std::process::id(),
            crate::payload::now_micros()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
