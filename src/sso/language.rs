//! The login page's language: Moodle's `lang` parameter first, then Accept-Language by
//! quality, among the languages the config has labels for; English otherwise.

/// The edge's own words on the login page, in the languages it ships.
pub(crate) struct Words {
    pub sign_in: &'static str,
    pub choose: &'static str,
    pub last_used: &'static str,
    pub local: &'static str,
    pub signed_out: &'static str,
    pub tenant: &'static str,
    pub go: &'static str,
}

pub(crate) fn words(lang: &str) -> Words {
    match lang {
        "fr" => Words {
            sign_in: "Connexion",
            choose: "Choisissez comment vous connecter",
            last_used: "utilisé la dernière fois",
            local: "Connexion avec un compte local",
            signed_out: "Vous êtes déconnecté.",
            tenant: "Organisation",
            go: "Continuer",
        },
        "nl" => Words {
            sign_in: "Inloggen",
            choose: "Kies hoe u wilt inloggen",
            last_used: "laatst gebruikt",
            local: "Inloggen met een lokaal account",
            signed_out: "U bent uitgelogd.",
            tenant: "Organisatie",
            go: "Verder",
        },
        "de" => Words {
            sign_in: "Anmelden",
            choose: "Wählen Sie, wie Sie sich anmelden",
            last_used: "zuletzt verwendet",
            local: "Mit lokalem Konto anmelden",
            signed_out: "Sie sind abgemeldet.",
            tenant: "Organisation",
            go: "Weiter",
        },
        _ => Words {
            sign_in: "Sign in",
            choose: "Choose how to sign in",
            last_used: "last used",
            local: "Sign in with a local account",
            signed_out: "You are signed out.",
            tenant: "Organisation",
            go: "Continue",
        },
    }
}

/// The primary subtag, lower-case (`fr-CA` -> `fr`, Moodle's `pt_br` -> `pt`).
fn primary(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Picks the page language from `lang`, then Accept-Language, among `known` (English always
/// counts as known: it is the fallback).
pub(crate) fn choose(
    lang_param: Option<&str>,
    accept_language: Option<&str>,
    known: &[String],
) -> String {
    let ok = |l: &str| l == "en" || known.iter().any(|k| k == l);
    if let Some(l) = lang_param.map(primary).filter(|l| ok(l)) {
        return l;
    }
    if let Some(header) = accept_language {
        let mut tags: Vec<(f32, String)> = header
            .split(',')
            .filter_map(|item| {
                let mut parts = item.split(';');
                let tag = primary(parts.next()?);
                let q = parts
                    .find_map(|p| {
                        p.trim()
                            .strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                    })
                    .unwrap_or(1.0);
                (!tag.is_empty() && tag != "*" && q > 0.0).then_some((q, tag))
            })
            .collect();
        // Stable: equal weights keep the header's order.
        tags.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        if let Some((_, l)) = tags.into_iter().find(|(_, l)| ok(l)) {
            return l;
        }
    }
    "en".into()
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn lang_param_then_accept_language_then_english() {
        let known = vec!["fr".to_string(), "nl".to_string()];
        assert_eq!(choose(Some("nl"), Some("fr"), &known), "nl");
        assert_eq!(choose(Some("xx"), Some("de, fr;q=0.8"), &known), "fr");
        assert_eq!(choose(None, Some("fr-CA;q=0.5, nl;q=0.9"), &known), "nl");
        assert_eq!(choose(None, Some("de"), &known), "en");
        assert_eq!(choose(None, None, &known), "en");
        assert_eq!(choose(None, Some("fr;q=0"), &known), "en");
    }
}
