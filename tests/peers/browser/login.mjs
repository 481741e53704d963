// Drives Debian's Chromium (headless, through playwright-core) over the edge's login page for
// tests/sso_browser.rs. Usage: node login.mjs CONFIG.json
// CONFIG: { edge, op, wants_oidc, wants_saml, oidc_user, saml_user, saml_password, shots }
// Each step prints "ok STEP"; any failed check throws (non-zero exit). Prints "done" last.
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true });
const timeout = 15000;

async function context(options = {}) {
  const ctx = await browser.newContext({ viewport: { width: 900, height: 560 }, ...options });
  ctx.setDefaultTimeout(timeout);
  return ctx;
}

const loginUrl = (query) => `${cfg.edge}/auth/login?${new URLSearchParams(query)}`;

// The accessible names of the provider buttons, in page order.
async function providerButtons(page) {
  return page.locator('button[name="provider"]').evaluateAll(
    (bs) => bs.map((b) => b.textContent.trim().replace(/\s+/g, ' ')));
}

// WCAG contrast ratio of an element's text against its own background colour.
async function contrast(locator) {
  return locator.evaluate((el) => {
    const rgb = (c) => c.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    let bgEl = el;
    let bg = getComputedStyle(bgEl).backgroundColor;
    while (bgEl && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {
      bgEl = bgEl.parentElement;
      bg = bgEl ? getComputedStyle(bgEl).backgroundColor : 'rgb(255, 255, 255)';
    }
    const a = lum(rgb(getComputedStyle(el).color));
    const b = lum(rgb(bg));
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  });
}

// What Tab reaches, in order: tag and accessible text of each focused element.
async function focusOrder(page, steps) {
  const seen = [];
  await page.locator('body').click({ position: { x: 2, y: 2 } });
  for (let i = 0; i < steps; i++) {
    await page.keyboard.press('Tab');
    seen.push(await page.evaluate(() => {
      const el = document.activeElement;
      const label = el.labels && el.labels[0] ? el.labels[0].textContent : el.textContent;
      return `${el.tagName.toLowerCase()}:${label.trim().replace(/\s+/g, ' ')}`;
    }));
  }
  return seen;
}

// Every form control has an accessible name (a label, or its own text).
async function unlabelled(page) {
  return page.evaluate(() => [...document.querySelectorAll('button, select, input:not([type=hidden]), a')]
    .filter((el) => {
      const own = (el.getAttribute('aria-label') || el.textContent || '').trim();
      const label = el.labels && [...el.labels].some((l) => l.textContent.trim());
      return !own && !label;
    })
    .map((el) => el.outerHTML));
}

async function shot(page, name) {
  if (!cfg.shots) return;
  await page.screenshot({ path: path.join(cfg.shots, name), fullPage: true });
}

// 1. The site's page in French (Accept-Language), one provider, a tenant selector.
{
  const ctx = await context({ locale: 'fr-FR' });
  const page = await ctx.newPage();
  await page.goto(loginUrl({ return: cfg.wants_oidc }));
  assert.equal(await page.getAttribute('html', 'lang'), 'fr');
  assert.equal(await page.locator('h1').innerText(), 'Université de Northfield');
  assert.deepEqual(await providerButtons(page), ['Compte universitaire']);
  assert.ok(await page.getByLabel('Organisation').isVisible());
  assert.deepEqual(await unlabelled(page), []);
  const ratio = await contrast(page.locator('button[name="provider"]').first());
  assert.ok(ratio >= 4.5, `button contrast ${ratio}`);
  await shot(page, 'sso-login-site-fr.png');
  const order = await focusOrder(page, 4);
  assert.deepEqual(order, [
    'button:Compte universitaire',
    'select:Organisation',
    'button:Continuer',
    'a:Connexion avec un compte local',
  ]);
  console.log('ok site page in French');
  await ctx.close();
}

// 2. The acme tenant's page in Dutch: its own name and colours, and its own provider too.
{
  const ctx = await context({ locale: 'nl-NL' });
  // The provider chosen last time on this browser comes first, marked.
  await ctx.addCookies([{ name: 'moodle-edge-sso-last', value: 'partner', url: cfg.edge }]);
  const page = await ctx.newPage();
  await page.goto(loginUrl({ tenant: 'acme', return: cfg.wants_saml }));
  assert.equal(await page.getAttribute('html', 'lang'), 'nl');
  assert.equal(await page.locator('h1').innerText(), 'Hogeschool ACME');
  assert.deepEqual(await providerButtons(page), ['Partnerinstelling laatst gebruikt', 'Universiteitsaccount']);
  assert.deepEqual(await unlabelled(page), []);
  for (const b of await page.locator('button').all()) {
    const ratio = await contrast(b);
    assert.ok(ratio >= 4.5, `button contrast ${ratio}`);
  }
  await shot(page, 'sso-login-acme-nl.png');
  console.log('ok tenant page in Dutch');
  // The same page in English, by Moodle's lang parameter.
  await page.goto(loginUrl({ tenant: 'acme', lang: 'en' }));
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  assert.deepEqual(await providerButtons(page), ['Partner institution last used', 'University account']);
  console.log('ok tenant page in English by lang=');
  await ctx.close();
}

// 3. A click through an OIDC login at the real provider, ending at wantsurl in Moodle.
{
  const ctx = await context({ locale: 'en-GB' });
  const page = await ctx.newPage();
  await page.goto(loginUrl({ return: cfg.wants_oidc }));
  await page.getByRole('button', { name: 'University account' }).click();
  await page.waitForURL((u) => u.href.startsWith(cfg.op));
  await page.locator('input[name="login"]').fill(cfg.oidc_user);
  await page.locator('input[name="password"]').fill('any');
  await page.locator('button[type="submit"], input[type="submit"]').first().click();
  // A consent step, if the provider shows one.
  await page.waitForURL((u) => !u.href.startsWith(cfg.op) || !u.pathname.endsWith('/login'), { timeout });
  if (page.url().startsWith(cfg.op)) {
    await page.locator('button[type="submit"], input[type="submit"]').first().click();
  }
  await page.waitForURL(`${cfg.edge}${cfg.wants_oidc}`);
  assert.equal((await page.locator('body').innerText()).trim(), `Logged in as ${cfg.oidc_user} at ${cfg.wants_oidc}`);
  console.log('ok OIDC login to wantsurl');
  await ctx.close();
}

// 4. A click through a SAML login at SimpleSAMLphp (the acme tenant's provider).
{
  const ctx = await context({ locale: 'en-GB' });
  const page = await ctx.newPage();
  await page.goto(loginUrl({ tenant: 'acme', return: cfg.wants_saml }));
  await page.getByRole('button', { name: 'Partner institution' }).click();
  await page.locator('input[name="username"]').fill(cfg.saml_user);
  await page.locator('input[name="password"]').fill(cfg.saml_password);
  await page.locator('input[name="password"]').press('Enter');
  // SimpleSAMLphp's answer page posts the SAMLResponse to the ACS by itself.
  await page.waitForURL(`${cfg.edge}${cfg.wants_saml}`);
  assert.equal((await page.locator('body').innerText()).trim(), `Logged in as ${cfg.saml_user} at ${cfg.wants_saml}`);
  console.log('ok SAML login to wantsurl');
  await ctx.close();
}

// 5. Without JavaScript the page still works: the provider button starts the login.
{
  const ctx = await context({ javaScriptEnabled: false });
  const page = await ctx.newPage();
  await page.goto(loginUrl({ return: cfg.wants_oidc }));
  await page.getByRole('button', { name: 'University account' }).click();
  await page.waitForURL((u) => u.href.startsWith(cfg.op));
  assert.ok(await page.locator('input[name="login"]').isVisible());
  console.log('ok without JavaScript');
  await ctx.close();
}

await browser.close();
console.log('done');
