//! The login page's look: the tenant's colours made readable, and the style sheet.
//!
//! Order: `Look::resolve` takes the tenant's `page` over the site's (`#rrggbb` only, anything
//! else is ignored) -> text colours are chosen by WCAG contrast against the colours they sit
//! on, so a light brand colour gets dark text instead of unreadable white -> `style_sheet`.

use super::config::PageConfig;

/// The default brand colour (a dark blue: 10:1 against white).
const DEFAULT_PRIMARY: &str = "#1a4d8f";
const DEFAULT_BACKGROUND: &str = "#f4f6f8";
/// Body text: near-black, 17:1 on white.
const INK: &str = "#1b1b1b";
const WHITE: &str = "#ffffff";
/// WCAG 2 AA for normal text.
const AA: f64 = 4.5;

/// The colours a page is drawn with, all `#rrggbb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Look {
    /// Header band and provider buttons.
    pub primary: String,
    /// Text on `primary` (white or ink, whichever reads better).
    pub on_primary: String,
    /// Page background around the card.
    pub background: String,
    /// Text straight on `background` (the footer).
    pub on_background: String,
    /// Links and headings on the white card: `primary` when it reads on white, else ink.
    pub accent: String,
}

/// A `#rrggbb` colour as its three channels, or None (anything else never reaches the CSS).
fn rgb(c: &str) -> Option<[u8; 3]> {
    let hex = c.strip_prefix('#')?;
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ch = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([ch(0)?, ch(2)?, ch(4)?])
}

/// WCAG 2 relative luminance.
fn luminance([r, g, b]: [u8; 3]) -> f64 {
    let f = |v: u8| {
        let v = f64::from(v) / 255.0;
        if v <= 0.039_28 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b)
}

/// WCAG 2 contrast ratio of two colours (1 to 21).
pub(crate) fn contrast(a: [u8; 3], b: [u8; 3]) -> f64 {
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// White or ink on `bg`, whichever contrasts more.
fn text_on(bg: [u8; 3]) -> &'static str {
    if contrast(bg, [255; 3]) >= contrast(bg, [0x1b; 3]) {
        WHITE
    } else {
        INK
    }
}

fn valid(c: Option<&String>) -> Option<&str> {
    c.map(String::as_str).filter(|c| rgb(c).is_some())
}

impl Look {
    /// The tenant's colours over the site's over the defaults.
    pub(crate) fn resolve(site: &PageConfig, own: Option<&PageConfig>) -> Look {
        let pick = |f: fn(&PageConfig) -> Option<&String>, default: &'static str| {
            own.and_then(|o| valid(f(o)))
                .or_else(|| valid(f(site)))
                .unwrap_or(default)
                .to_ascii_lowercase()
        };
        let primary = pick(|p| p.primary_colour.as_ref(), DEFAULT_PRIMARY);
        let background = pick(|p| p.background_colour.as_ref(), DEFAULT_BACKGROUND);
        let p = rgb(&primary).unwrap_or([0x1a, 0x4d, 0x8f]);
        let bg = rgb(&background).unwrap_or([0xf4, 0xf6, 0xf8]);
        let accent = if contrast(p, [255; 3]) >= AA {
            primary.clone()
        } else {
            INK.to_string()
        };
        Look {
            on_primary: text_on(p).to_string(),
            on_background: text_on(bg).to_string(),
            accent,
            primary,
            background,
        }
    }

    /// The page's whole style sheet (inline: the CSP allows no other source).
    pub(crate) fn style_sheet(&self) -> String {
        let Look {
            primary,
            on_primary,
            background,
            on_background,
            accent,
        } = self;
        format!(
            "*{{box-sizing:border-box}}\
body{{margin:0;font:1rem/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Noto Sans\",sans-serif;background:{background};color:{INK}}}\
header{{background:{primary};color:{on_primary};border-bottom:4px solid rgba(0,0,0,.18)}}\
header .bar{{max-width:30rem;margin:0 auto;padding:1rem 1.25rem;display:flex;align-items:center;gap:1rem}}\
header img{{height:3.5rem;width:auto;background:#fff;border-radius:6px;padding:.25rem}}\
header h1{{margin:0;font-size:1.45rem;line-height:1.2;font-weight:650;letter-spacing:.01em}}\
main{{max-width:30rem;margin:2rem auto;padding:2rem 2rem 1.5rem;background:#fff;border-radius:10px;box-shadow:0 1px 2px rgba(0,0,0,.12),0 4px 16px rgba(0,0,0,.08)}}\
h2{{margin:0 0 1.25rem;font-size:1.2rem;font-weight:600;color:{INK}}}\
ul{{list-style:none;margin:0;padding:0}}li{{margin:0 0 .75rem}}\
button{{font:inherit;cursor:pointer;border-radius:6px}}\
button.provider{{width:100%;min-height:3rem;padding:.7rem 1rem;font-weight:600;border:2px solid {primary};background:{primary};color:{on_primary};display:flex;align-items:center;justify-content:space-between;gap:.75rem;text-align:left}}\
button.provider::after{{content:\"\\2192\";font-weight:400}}\
button.provider:hover{{filter:brightness(1.12)}}\
.last{{font-size:.8rem;font-weight:400;opacity:.95;border:1px solid currentColor;border-radius:999px;padding:0 .5rem;margin-left:auto;white-space:nowrap}}\
:focus-visible{{outline:3px solid {INK};outline-offset:2px;box-shadow:0 0 0 6px #ffbf47}}\
a{{color:{accent};text-underline-offset:.15em}}\
.local{{margin:1.5rem 0 0;padding-top:1rem;border-top:1px solid #d8dde3;font-size:.95rem}}\
form.tenant{{margin:1.25rem 0 0;padding-top:1rem;border-top:1px solid #d8dde3;display:flex;flex-wrap:wrap;align-items:center;gap:.5rem}}\
form.tenant label{{font-weight:600;flex-basis:100%}}\
select{{font:inherit;flex:1;min-width:12rem;padding:.45rem .5rem;border:1px solid #6b7280;border-radius:6px;background:#fff;color:{INK}}}\
button.secondary{{padding:.45rem 1rem;border:2px solid {accent};background:#fff;color:{accent};font-weight:600}}\
p.note{{margin:0 0 1.25rem;padding:.6rem .8rem;border-left:4px solid #2e7d32;background:#edf7ee;border-radius:4px}}\
footer{{max-width:30rem;margin:0 auto 2rem;padding:0 1.25rem;font-size:.85rem;color:{on_background};opacity:.85;text-align:center}}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(primary: Option<&str>, background: Option<&str>) -> PageConfig {
        PageConfig {
            primary_colour: primary.map(str::to_string),
            background_colour: background.map(str::to_string),
            ..PageConfig::default()
        }
    }

    #[test]
    fn contrast_matches_wcag_examples() {
        assert!((contrast([0; 3], [255; 3]) - 21.0).abs() < 0.01);
        assert!((contrast([0x77; 3], [255; 3]) - 4.48).abs() < 0.01);
    }

    #[test]
    fn a_light_brand_colour_gets_dark_text_and_dark_links() {
        let look = Look::resolve(&page(Some("#ffd200"), None), None);
        assert_eq!(look.on_primary, INK);
        assert_eq!(look.accent, INK);
        let dark = Look::resolve(&page(Some("#8A1C3B"), None), None);
        assert_eq!(dark.on_primary, WHITE);
        assert_eq!(dark.accent, "#8a1c3b");
    }

    #[test]
    fn the_tenant_wins_and_bad_colours_never_reach_the_css() {
        let site = page(Some("#112233"), Some("#eeeeee"));
        let own = page(Some("red;}body{x"), Some("#000000"));
        let look = Look::resolve(&site, Some(&own));
        assert_eq!(look.primary, "#112233");
        assert_eq!(look.background, "#000000");
        assert_eq!(look.on_background, WHITE);
        assert!(!look.style_sheet().contains("red;"));
    }
}
