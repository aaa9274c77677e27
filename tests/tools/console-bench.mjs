// The console's figures (bench/console-audit.sh): first load of /ui/ on a
// fresh browser context, five times, and the audit log verified in the
// browser, with the time the page reports and the page's peak JS heap.
import { chromium } from 'playwright-core';

const { AMBER_URL: url, AMBER_ADMIN: admin } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const loads = [];
for (let i = 0; i < 5; i += 1) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const started = Date.now();
  await page.goto(`${url}/ui/`);
  await page.getByLabel('Token').waitFor();
  loads.push(Date.now() - started);
  const nav = await page.evaluate(() => performance.getEntriesByType('navigation')[0].toJSON());
  loads.push(`(load event ${Math.round(nav.loadEventEnd)} ms)`);
  await context.close();
}
console.log(`first load, ms to a usable sign-in form: ${loads.join(' ')}`);
const page = await (await browser.newContext()).newPage();
await page.goto(`${url}/ui/`);
await page.getByLabel('Token').fill(admin);
await page.getByRole('button', { name: 'Sign in' }).click();
await page.getByText('Signed in as').waitFor();
const listed = Date.now();
await page.goto(`${url}/ui/#/audit`);
await page.getByRole('button', { name: 'Verify the whole log' }).waitFor();
console.log(`audit page (newest 200 entries) shown in ${Date.now() - listed} ms`);
const started = Date.now();
await page.getByRole('button', { name: 'Verify the whole log' }).click();
await page.locator('#audit-status .verdict.ok, #audit-status .verdict.bad').waitFor({ timeout: 120_000 });
const wall = Date.now() - started;
const verdict = await page.locator('#audit-status').textContent();
const heap = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0);
console.log(`audit verification: ${wall} ms wall (progress max ${await page.locator('#audit-progress').getAttribute('max')}); JS heap after ${Math.round(heap / 2 ** 20)} MiB`);
console.log(verdict);
await browser.close();
