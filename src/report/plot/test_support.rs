//! Helpers of the figure tests: SVG checks and one example of every figure kind.

use plotters::prelude::RGBColor;

use super::spec::{Bar, BarGroup, BarPlot, Heatmap, LinePlot, Series};

pub(super) fn well_formed(svg: &str) {
    assert!(svg.trim_start().starts_with("<svg"), "bad start: {}", &svg[..60.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"), "bad end");
    assert!(!svg.contains("NaN"), "NaN leaked into the SVG");
    assert!(!svg.contains("inf"), "infinity leaked into the SVG");
}

/// True when `text` is the content of some `<text>` element.
pub(super) fn has_text(svg: &str, text: &str) -> bool {
    svg.contains(&format!(">\n{text}\n</text>")) || svg.contains(&format!(">{text}\n</text>"))
}

pub(super) fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// Number of filled `<rect>` elements with colour `c`.
pub(super) fn rects_with(svg: &str, c: RGBColor) -> usize {
    let fill = format!("fill=\"{}\"", hex(c));
    svg.lines().filter(|l| l.starts_with("<rect") && l.contains(&fill)).count()
}

pub(super) fn example_line() -> LinePlot {
    let xs: Vec<f64> = (0..=20).map(|i| i as f64 / 20.0).collect();
    let mut plot = LinePlot::new(
        "Linear mode connectivity between two CopRA runs (test accuracy along the path)",
        "interpolation coefficient α",
        "accuracy",
    );
    let mean: Vec<(f64, f64)> = xs.iter().map(|&x| (x, 0.8 - 0.25 * (std::f64::consts::PI * x).sin())).collect();
    plot.series.push(Series {
        band: Some(mean.iter().map(|&(x, y)| (x, y - 0.03, y + 0.03)).collect()),
        color: Some(0),
        ..Series::new("CopRA (mean ± 95% CI)", mean)
    });
    let mut lora: Vec<(f64, f64)> = xs.iter().map(|&x| (x, 0.78 - 0.05 * (std::f64::consts::PI * x).sin())).collect();
    lora[7].1 = f64::NAN;
    plot.series.push(Series::new("LoRA", lora));
    plot.series.push(Series {
        dashed: true,
        color: Some(0),
        ..Series::new("CopRA train", xs.iter().map(|&x| (x, 0.9 - 0.1 * x)).collect())
    });
    plot.reference_y = Some((0.75, "linear probe".to_string()));
    plot
}

pub(super) fn example_bars() -> BarPlot {
    let methods = ["LoRA", "CopRA", "CopRA + prune"];
    let groups = ["CIFAR-100", "Flowers-102", "a very long dataset name that wraps"];
    BarPlot {
        title: "Merged accuracy by dataset".into(),
        x_label: "dataset".into(),
        y_label: "accuracy".into(),
        groups: groups
            .iter()
            .enumerate()
            .map(|(gi, g)| BarGroup {
                label: g.to_string(),
                bars: methods
                    .iter()
                    .enumerate()
                    .filter(|&(mi, _)| !(gi == 2 && mi == 1))
                    .map(|(mi, m)| {
                        let v = 0.6 + 0.1 * mi as f64 - 0.05 * gi as f64;
                        Bar { series: m.to_string(), value: v, err: Some((v - 0.02, v + 0.03)) }
                    })
                    .collect(),
            })
            .collect(),
        ..BarPlot::default()
    }
}

pub(super) fn example_heatmap() -> Heatmap {
    let ny = 12;
    let nx = 4;
    Heatmap {
        title: "Shapley value per block and module".into(),
        x_label: "module".into(),
        y_label: "block".into(),
        x_ticks: ["query", "key", "value", "output"].iter().map(|s| s.to_string()).collect(),
        y_ticks: (0..ny).map(|i| format!("block {i}")).collect(),
        values: (0..ny).map(|i| (0..nx).map(|j| ((i * nx + j) as f64 * 0.37).sin() * 0.02).collect()).collect(),
        annotate: true,
        ..Heatmap::default()
    }
}

/// One element of a parsed XML document.
#[derive(Debug)]
pub(super) struct XmlElement {
    /// Tag name.
    pub name: String,
    /// Attributes in document order.
    pub attrs: Vec<(String, String)>,
    /// Nesting depth (0 for the root).
    pub depth: usize,
}

impl XmlElement {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A parsed XML document: its elements in document order and the trimmed text of every
/// text node (entities left as written).
#[derive(Debug)]
pub(super) struct XmlDoc {
    /// Elements, root first.
    pub elements: Vec<XmlElement>,
    /// Non-blank text nodes, trimmed.
    pub texts: Vec<String>,
}

impl XmlDoc {
    /// Elements named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a XmlElement> + 'a {
        self.elements.iter().filter(move |e| e.name == name)
    }

    /// How many text nodes equal `text`.
    pub fn text_count(&self, text: &str) -> usize {
        self.texts.iter().filter(|t| *t == text).count()
    }
}

/// Checks that `text` uses `&` only in the five XML entities or a character reference.
fn check_entities(text: &str) -> Result<(), String> {
    for (i, _) in text.match_indices('&') {
        let rest = &text[i + 1..];
        let ok = ["amp;", "lt;", "gt;", "quot;", "apos;"].iter().any(|e| rest.starts_with(e))
            || (rest.starts_with('#') && rest.find(';').is_some_and(|end| end > 1));
        if !ok {
            return Err(format!("stray `&` in {:?}", &text[i..(i + 12).min(text.len())]));
        }
    }
    Ok(())
}

/// Parses the attributes of a start tag's inside (after the name).
fn parse_attrs(mut s: &str) -> Result<Vec<(String, String)>, String> {
    let mut attrs = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(attrs);
        }
        let eq = s.find('=').ok_or_else(|| format!("attribute without a value: {s:?}"))?;
        let key = s[..eq].trim().to_string();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("bad attribute name {key:?}"));
        }
        let rest = s[eq + 1..].trim_start();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
        let quote = quote.ok_or_else(|| format!("attribute {key} is not quoted"))?;
        let end = rest[1..].find(quote).ok_or_else(|| format!("attribute {key} is not closed"))? + 1;
        let value = &rest[1..end];
        if value.contains('<') {
            return Err(format!("`<` in the value of attribute {key}"));
        }
        check_entities(value)?;
        if attrs.iter().any(|(k, _)| *k == key) {
            return Err(format!("attribute {key} given twice"));
        }
        attrs.push((key, value.to_string()));
        s = &rest[end + 1..];
    }
}

/// The byte offset of the `>` closing the tag that starts `s`, skipping quoted values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Parses `doc` as XML: one root element, every tag closed in order, quoted attributes, no
/// stray `<` or `&`. Errors name the first problem.
pub(super) fn parse_xml(doc: &str) -> Result<XmlDoc, String> {
    let mut out = XmlDoc { elements: Vec::new(), texts: Vec::new() };
    let mut open: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = doc;
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        let text = rest[..lt].trim();
        if !text.is_empty() {
            if open.is_empty() {
                return Err(format!("text outside the root element: {text:?}"));
            }
            check_entities(text)?;
            if text.contains('>') {
                return Err(format!("stray `>` in text {text:?}"));
            }
            out.texts.push(text.to_string());
        }
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>").ok_or("unclosed processing instruction")? + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").ok_or("unclosed comment")? + 3..];
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or("unclosed end tag")?;
            let name = r[..end].trim();
            match open.pop() {
                Some(o) if o == name => {}
                other => return Err(format!("end tag </{name}> closes {other:?}")),
            }
            rest = &r[end + 1..];
        } else {
            let end = tag_end(rest).ok_or("unclosed start tag")?;
            let inner = &rest[1..end];
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            let name = &inner[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || "-_:.".contains(c)) {
                return Err(format!("bad tag name {name:?}"));
            }
            if open.is_empty() {
                roots += 1;
                if roots > 1 {
                    return Err(format!("second root element <{name}>"));
                }
            }
            let attrs = parse_attrs(&inner[name_end..]).map_err(|e| format!("<{name}>: {e}"))?;
            out.elements.push(XmlElement { name: name.to_string(), attrs, depth: open.len() });
            if !empty {
                open.push(name.to_string());
            }
            rest = &rest[end + 1..];
        }
    }
    if let Some(o) = open.last() {
        return Err(format!("<{o}> is never closed"));
    }
    if roots != 1 {
        return Err("no root element".into());
    }
    Ok(out)
}

/// Parses an SVG figure, checks its root is an `<svg>` at least `min` pixels large (exactly
/// `min` when `exact`) and returns the document.
pub(super) fn parse_svg(svg: &str, min: (u32, u32), exact: bool) -> XmlDoc {
    well_formed(svg);
    let doc = parse_xml(svg).unwrap_or_else(|e| panic!("not well-formed XML: {e}"));
    let root = &doc.elements[0];
    assert_eq!(root.name, "svg");
    assert!(doc.elements[1..].iter().all(|e| e.depth >= 1), "one root element holds every other");
    let dim = |k: &str| -> u32 { root.attr(k).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("svg {k}")) };
    let size = (dim("width"), dim("height"));
    if exact {
        assert_eq!(size, min, "figure size");
    } else {
        assert!(size.0 >= min.0 && size.1 >= min.1, "figure size {size:?} below {min:?}");
    }
    doc
}
