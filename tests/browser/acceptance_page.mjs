#!/usr/bin/env node
// The page step of scripts/acceptance: opens the dashboard in headless Chromium signed in with
// a token (`?token=`), and waits until the portfolio the page shows has caught up with a
// write (through_seq >= the write's seq) and holds `units` units.
//
//   node tests/browser/acceptance_page.mjs DASHBOARD_URL TOKEN SEQ UNITS
//
// Exits 0 when the page shows them, 1 with what it showed otherwise.
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const [url, token, seq, units] = process.argv.slice(2);
if (!units) {
  console.error('usage: acceptance_page.mjs DASHBOARD_URL TOKEN SEQ UNITS');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.HI_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
let shown = null;
try {
  const page = await browser.newPage();
  await page.goto(`${url}?token=${encodeURIComponent(token)}`);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    shown = await page.evaluate(() => {
      const p = window.hiState && window.hiState.portfolio;
      return p ? { through_seq: p.through_seq, units: p.units } : null;
    });
    if (shown && shown.through_seq >= Number(seq) && shown.units === Number(units)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
} finally {
  await browser.close();
}
if (!shown || shown.through_seq < Number(seq) || shown.units !== Number(units)) {
  console.error(`the page shows ${JSON.stringify(shown)}; expected through_seq >= ${seq} and ${units} units`);
  process.exit(1);
}
console.log(`the page shows ${shown.units} units through event ${shown.through_seq}`);
