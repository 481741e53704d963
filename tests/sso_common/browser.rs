//! A browser as far as the SSO flows need one: a cookie jar keyed by host (ports share
//! cookies, as in browsers), redirects followed one at a time, HTML forms submitted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use url::Url;

/// One answer.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: Url,
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub text: String,
}

impl Page {
    /// The Location resolved against the page's URL.
    pub fn next_url(&self) -> Option<Url> {
        self.location.as_ref().and_then(|l| self.url.join(l).ok())
    }

    pub fn set_cookie(&self, name: &str) -> Option<&String> {
        self.set_cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

pub struct Browser {
    http: reqwest::Client,
    /// host -> name -> value
    jar: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    pub accept_language: Option<String>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let at = tag.find(&key)? + key.len();
    let end = tag[at..].find('"')? + at;
    Some(
        tag[at..end]
            .replace("&amp;", "&")
            .replace("&#x2F;", "/")
            .replace("&#x2f;", "/"),
    )
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            jar: Mutex::new(BTreeMap::new()),
            accept_language: None,
        }
    }

    pub fn cookie(&self, host: &str, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(host)?.get(name).cloned()
    }

    pub fn set_cookie(&self, host: &str, name: &str, value: &str) {
        self.jar
            .lock()
            .unwrap()
            .entry(host.to_string())
            .or_default()
            .insert(name.to_string(), value.to_string());
    }

    pub fn cookie_names(&self, host: &str) -> Vec<String> {
        self.jar
            .lock()
            .unwrap()
            .get(host)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn cookie_header(&self, host: &str) -> Option<String> {
        let jar = self.jar.lock().unwrap();
        let m = jar.get(host)?;
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn store(&self, host: &str, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
            return;
        };
        let delete = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
        let mut jar = self.jar.lock().unwrap();
        let m = jar.entry(host.to_string()).or_default();
        if delete || value.is_empty() {
            m.remove(name);
        } else {
            m.insert(name.to_string(), value.to_string());
        }
    }

    /// One request (no redirect followed); `host` overrides the Host header (tenant tests).
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
        host: Option<&str>,
    ) -> Page {
        let url = Url::parse(url).unwrap();
        let jar_host = host
            .map(|h| h.split(':').next().unwrap().to_string())
            .unwrap_or_else(|| url.host_str().unwrap().to_string());
        let mut req = self.http.request(method.parse().unwrap(), url.clone());
        if let Some(h) = host {
            req = req.header("host", h);
        }
        if let Some(c) = self.cookie_header(&jar_host) {
            req = req.header("cookie", c);
        }
        if let Some(l) = &self.accept_language {
            req = req.header("accept-language", l);
        }
        if let Some(f) = form {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(f.iter())
                .finish();
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for c in &set_cookies {
            self.store(&jar_host, c);
        }
        let text = resp.text().await.unwrap_or_default();
        Page {
            url,
            status,
            location,
            set_cookies,
            text,
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        self.send("GET", url, None, None).await
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        self.send("POST", url, Some(form), None).await
    }

    /// Follows redirects (GET) from `page` until an answer that is not one; every page on the
    /// way, the last one last.
    pub async fn follow(&self, page: Page) -> Vec<Page> {
        let mut pages = vec![page];
        for _ in 0..20 {
            let last = pages.last().unwrap();
            if !(300..400).contains(&last.status) {
                return pages;
            }
            let next = last.next_url().expect("redirect without Location");
            let p = self.get(next.as_str()).await;
            pages.push(p);
        }
        panic!(
            "more than 20 redirects: {:?}",
            pages.iter().map(|p| p.url.to_string()).collect::<Vec<_>>()
        );
    }

    /// Submits the page's first POST form with its hidden fields and `fill`, then follows.
    pub async fn submit(&self, page: &Page, fill: &[(&str, &str)]) -> Vec<Page> {
        let text = &page.text;
        let start = text.find("<form").expect("no form on the page");
        let tag_end = text[start..].find('>').unwrap() + start;
        let form_tag = &text[start..tag_end];
        let action = attr(form_tag, "action").unwrap_or_else(|| page.url.to_string());
        let action = page.url.join(&action).unwrap();
        let end = text[start..]
            .find("</form>")
            .map(|e| e + start)
            .unwrap_or(text.len());
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut rest = &text[start..end];
        while let Some(i) = rest.find("<input") {
            let tag_end = rest[i..].find('>').unwrap() + i;
            let tag = &rest[i..tag_end];
            if let Some(name) = attr(tag, "name") {
                fields.push((name, attr(tag, "value").unwrap_or_default()));
            }
            rest = &rest[tag_end..];
        }
        for (k, v) in fill {
            fields.retain(|(n, _)| n != k);
            fields.push((k.to_string(), v.to_string()));
        }
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let first = self.post(action.as_str(), &pairs).await;
        self.follow(first).await
    }

    /// Walks an OIDC login at the real provider from the edge's provider choice to the end:
    /// the provider's login form gets `login`, every later form (consent) is submitted as is.
    pub async fn oidc_login(&self, start_url: &str, login: &str) -> Vec<Page> {
        let mut pages = self.follow(self.get(start_url).await).await;
        for _ in 0..4 {
            let last = pages.last().unwrap().clone();
            if !last.text.contains("<form") || !last.url.path().starts_with("/interaction/") {
                return pages;
            }
            let fill: Vec<(&str, &str)> = if last.text.contains("name=\"login\"") {
                vec![("login", login), ("password", "any")]
            } else {
                vec![]
            };
            pages.extend(self.submit(&last, &fill).await);
        }
        pages
    }
}
