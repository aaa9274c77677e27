// End-to-end tests of the console in headless Chromium (Debian's), driven
// by Playwright, against a real amberd the Rust test started and filled:
//   node console.mjs   with AMBER_URL, AMBER_ADMIN (admin token),
//   AMBER_PUSHER (push+pull on acme/web), AMBER_PULL (pull on acme/web only).
// acme/web holds tags 1.0.0, 1.1.0 and 2.0.0 (pushed through trusted
// publishing, with provenance); acme/secret holds a tag too. SCREENSHOTS=DIR
// saves a picture of each page. Prints one line per case; exits 1 on failure.
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { blake3 } from '@noble/hashes/blake3.js';

const { AMBER_URL: url, AMBER_ADMIN: admin, AMBER_PULL: pullOnly } = process.env;
const shots = process.env.SCREENSHOTS;
const ui = `${url}/ui/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const curl = (path, token) => {
  const out = execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${token}`, `${url}${path}`]);
  return Number(out.toString());
};

async function shot(page, name) {
  // Secrets are masked: a picture for the README shows none.
  if (shots) await page.screenshot({ path: `${shots}/console-${name}.png`, fullPage: true, mask: [page.locator('#secret code')] });
}

async function signIn(page, token) {
  await page.goto(ui);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Signed in as').waitFor();
}

const verdictOf = (page) => page.locator('.verdict').first();
let failures = 0;
async function test(name, body) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && !m.text().includes('status of 4') && problems.push(`console: ${m.text()}`));
  try {
    await body(page, context);
    assert.deepEqual(problems, [], 'the page logged no error');
    console.log(`ok   ${name}`);
  } catch (err) {
    failures += 1;
    console.log(`FAIL ${name}: ${err.stack ?? err}`);
    await page.screenshot({ path: `/tmp/console-fail-${name.replace(/\W+/g, '-')}.png` }).catch(() => {});
  } finally {
    await context.close();
  }
}

await test('first load is fast and signs in', async (page) => {
  const started = Date.now();
  await page.goto(ui);
  await page.getByLabel('Token').waitFor();
  const loaded = Date.now() - started;
  const nav = await page.evaluate(() => performance.getEntriesByType('navigation')[0].toJSON());
  console.log(`     first load: ${loaded} ms to a usable sign-in form (load event at ${Math.round(nav.loadEventEnd)} ms)`);
  await shot(page, 'sign-in');
  await page.getByLabel('Token').fill(admin);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('cell', { name: 'acme/web' }).waitFor();
  await page.getByRole('cell', { name: 'acme/secret' }).waitFor();
  await page.getByText('Pinned this server').waitFor();
  await page.getByLabel('Search').fill('sec');
  assert.equal(await page.getByRole('cell', { name: 'acme/web' }).count(), 0, 'search filters');
  await page.getByLabel('Search').fill('');
  await shot(page, 'repositories');
});

await test('a manifest is verified in the browser, with its log receipt', async (page) => {
  await signIn(page, admin);
  await page.getByRole('link', { name: 'acme/web' }).click();
  await page.getByRole('cell', { name: 'live' }).first().waitFor();
  await page.getByText('ci-pusher (web-ci)').first().waitFor();
  await shot(page, 'tags');
  await page.getByRole('link', { name: '1.0.0' }).click();
  await page.getByText('Verified.').waitFor();
  await page.getByText('In the log.').waitFor();
  assert.match(await page.locator('.copyable code').first().textContent(), /^amber pull acme\/web:1\.0\.0 /);
  await page.getByRole('cell', { name: 'dist/app.bin' }).waitFor();
  // The witness's cosignature of the receipt's checkpoint, verified here.
  await page.getByRole('cell', { name: /^cosigned \d{4}-/ }).waitFor();
  await page.getByText('No SLSA provenance').waitFor();
  await page.getByRole('cell', { name: 'PASSED' }).waitFor();
  await shot(page, 'manifest');
});

await test('the provenance of a trusted-publishing push is verified and shown', async (page) => {
  await signIn(page, admin);
  await page.goto(`${ui}#/repos/acme/web/tags/2.0.0`);
  await page.getByText('SLSA provenance verified.').waitFor();
  await page.getByRole('cell', { name: 'https://actions.github.io/buildtypes/workflow/v1' }).waitFor();
  // The commit, in the provenance (and in the CI run's claims above).
  await page.getByRole('table', { name: 'Build' }).getByRole('cell', { name: '0123456789abcdef0123456789abcdef01234567' }).waitFor();
  assert.match(await page.getByRole('cell', { name: /actions\/runs\/4711/ }).textContent(), /attempts\/1$/);
  await shot(page, 'provenance');
  // Altered in transit: red, and nothing of it shown as verified.
  await page.route('**/v1/repos/acme/web/tags/2.0.0/attestations', async (route) => {
    const response = await route.fetch();
    const envelopes = await response.json();
    const statement = JSON.parse(Buffer.from(envelopes[0].payload, 'base64').toString());
    statement.predicate.buildDefinition.resolvedDependencies[0].digest.gitCommit = 'f'.repeat(40);
    envelopes[0].payload = Buffer.from(JSON.stringify(statement)).toString('base64');
    await route.fulfill({ response, json: envelopes });
  });
  await page.reload();
  await page.getByText('Attestations not verified:').waitFor();
  assert.equal(await page.getByText('SLSA provenance verified.').count(), 0);
});

await test('an envelope altered in transit shows the red reason', async (page) => {
  await signIn(page, admin);
  await page.route('**/v1/repos/acme/web/tags/1.0.0', async (route) => {
    const response = await route.fetch();
    const envelope = await response.json();
    const payload = JSON.parse(Buffer.from(envelope.payload, 'base64').toString());
    payload.files[0].size += 1;
    envelope.payload = Buffer.from(JSON.stringify(payload)).toString('base64');
    await route.fulfill({ response, json: envelope });
  });
  await page.goto(`${ui}#/repos/acme/web/tags/1.0.0`);
  const verdict = verdictOf(page);
  await verdict.filter({ hasText: 'Not verified' }).waitFor();
  assert.match(await verdict.textContent(), /does not verify: the envelope was altered/);
  await page.getByText('What the server sent (unverified)').waitFor();
  assert.equal(await page.getByText('Verified.').count(), 0);
  await shot(page, 'manifest-altered');
});

await test('a changed key set is a warning, not trusted silently', async (page, context) => {
  await signIn(page, admin);
  await page.getByText('Signed in as').waitFor();
  // The first visit pins the keys it is served; change them only after that,
  // or a slow first visit pins the changed set.
  await page.waitForFunction(() => localStorage.getItem('amber.pinned-keys') !== null);
  await context.route('**/v1/keys', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    // A key rotated in: well formed, its id right, but not pinned.
    const key = Buffer.alloc(32, 7);
    const keyid = Buffer.from(blake3(key)).toString('hex').slice(0, 32);
    body.keys.push({ ...body.keys[0], keyid, public_key: key.toString('base64') });
    await route.fulfill({ response, json: body });
  });
  await page.reload();
  await page.getByText('signing keys changed').waitFor();
  await page.goto(`${ui}#/keys`);
  await page.getByText('The server’s keys changed.').waitFor();
  await shot(page, 'keys-changed');
  // Still verified by the pinned key; the new one is not trusted until accepted.
  await page.goto(`${ui}#/repos/acme/web/tags/1.0.0`);
  await page.getByText('Verified.').waitFor();
});

await test('tokens: create, use with curl, rotate, revoke', async (page) => {
  await signIn(page, admin);
  await page.getByRole('link', { name: 'Tokens' }).click();
  await page.getByLabel('Name').fill('deploy-web');
  await page.getByLabel('Pipeline (optional)').fill('deploys');
  await page.getByLabel('Repository').fill('acme/web');
  await page.getByRole('button', { name: 'Create token…' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Create' }).click();
  const secret = (await page.locator('#secret code').first().textContent()).trim();
  assert.match(secret, /^amber_/);
  await shot(page, 'tokens');
  assert.equal(curl('/v1/whoami', secret), 200, 'the new secret works');
  assert.equal(curl('/v1/repos/acme/web/tags', secret), 200, 'it may pull acme/web');
  assert.equal(curl('/v1/repos/acme/secret/tags', secret), 403, 'and nothing else');

  await page.getByRole('button', { name: 'Rotate deploy-web' }).click();
  await page.getByRole('dialog').getByLabel('Grace (seconds)').fill('0');
  await page.getByRole('dialog').getByRole('button', { name: 'Rotate' }).click();
  await page.getByText('Rotated: deploy-web').waitFor();
  const rotated = (await page.locator('#secret code').first().textContent()).trim();
  assert.notEqual(rotated, secret);
  assert.equal(curl('/v1/whoami', rotated), 200, 'the rotated secret works');
  assert.equal(curl('/v1/whoami', secret), 401, 'the old one ended with no grace');

  // Cancel first: nothing happens without the confirmation.
  const revoke = page.getByRole('button', { name: 'Revoke deploy-web' }).last();
  await revoke.click();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
  assert.equal(curl('/v1/whoami', rotated), 200, 'a cancelled revocation revokes nothing');
  await revoke.click();
  await page.getByRole('dialog').getByRole('button', { name: 'Revoke' }).click();
  await page.getByText('revoked').first().waitFor();
  // The page may show "revoked" (an earlier token's row) before this
  // revocation's answer: wait for the secret to stop working, 10 s at most.
  let status = curl('/v1/whoami', rotated);
  for (let i = 0; i < 100 && status !== 401; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    status = curl('/v1/whoami', rotated);
  }
  assert.equal(status, 401, 'revoked');
});

await test('the audit log is verified in the browser', async (page) => {
  await signIn(page, admin);
  await page.getByRole('link', { name: 'Audit' }).click();
  await page.getByRole('cell', { name: 'tag_bound' }).first().waitFor();
  await page.getByRole('button', { name: 'Verify the whole log' }).click();
  await page.getByText('Verified.').waitFor({ timeout: 60_000 });
  const seconds = await page.locator('#audit-status').getAttribute('data-seconds');
  assert.equal(await page.locator('#audit-progress').getAttribute('value'), await page.locator('#audit-progress').getAttribute('max'));
  console.log(`     audit: ${await page.locator('#audit-progress').getAttribute('max')} entries verified in ${seconds ?? '?'} s`);
  await page.locator('#audit-kind').selectOption('tag_bound');
  await page.getByRole('cell', { name: 'tag_bound' }).first().waitFor();
  assert.ok((await page.getByRole('cell', { name: 'blob_pushed' }).count()) === 0, 'filtered by kind');
  await shot(page, 'audit');
});

await test('an edited audit entry is named', async (page) => {
  await signIn(page, admin);
  await page.route('**/v1/audit?limit=10000&after=0', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    body.entries[1].entry = body.entries[1].entry.replace('"seq":2', '"seq":2 ');
    await route.fulfill({ response, json: body });
  });
  await page.goto(`${ui}#/audit`);
  await page.getByRole('button', { name: 'Verify the whole log' }).click();
  await page.getByText('entry 2 is not the entry the signed checkpoint covers').waitFor();
});

await test('publishers, retention with its plan, storage and keys pages', async (page) => {
  await signIn(page, admin);
  await page.getByRole('link', { name: 'Publishers' }).click();
  await page.getByRole('cell', { name: 'web release' }).first().waitFor();
  await shot(page, 'publishers');
  await page.getByRole('link', { name: 'Retention' }).click();
  await page.getByLabel('Scope').fill('acme/web');
  await page.getByLabel('Keep the last N tags').fill('2');
  await page.getByRole('button', { name: 'Show the plan' }).click();
  await page.getByText('Would expire 1 tag').waitFor();
  await page.getByRole('cell', { name: '1.0.0' }).waitFor();
  await shot(page, 'retention');
  // Not saved: the preview stores nothing.
  assert.equal(curl('/v1/retention/acme/web', admin), 404);
  await page.getByRole('link', { name: 'Storage' }).click();
  await page.getByText('Waiting for reclaim').waitFor();
  // A run started here is followed to its end, with its report.
  await page.getByRole('button', { name: 'Check the store (fsck)' }).click();
  await page.getByText(/no fault in \d+ linked blob/).waitFor();
  await shot(page, 'storage');
  await page.getByRole('link', { name: 'Keys' }).click();
  await page.getByText('Pinned.').waitFor();
  await shot(page, 'keys');
});

await test('a pull-only token sees no admin page and no other repository', async (page) => {
  await signIn(page, pullOnly);
  await page.getByRole('cell', { name: 'acme/web' }).waitFor();
  assert.equal(await page.getByText('acme/secret').count(), 0);
  for (const name of ['Audit', 'Tokens', 'Publishers', 'Retention', 'Storage']) {
    assert.equal(await page.getByRole('link', { name }).isVisible(), false, `${name} is hidden`);
  }
  await page.goto(`${ui}#/tokens`);
  await page.getByText('Admin only').waitFor();
  await page.goto(`${ui}#/repos/acme/secret`);
  await page.getByText('lacks pull on acme/secret').waitFor();
  await page.goto(`${ui}#/repos/acme/web/tags/1.0.0`);
  await page.getByText('In the log.').waitFor();
});

await test('sign-out leaves no secret in any storage', async (page, context) => {
  await signIn(page, admin);
  await page.getByRole('cell', { name: 'acme/web' }).waitFor();
  assert.ok((await page.evaluate(() => JSON.stringify(sessionStorage))).includes(admin));
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Token').waitFor();
  const stored = await page.evaluate(() => JSON.stringify({ s: { ...sessionStorage }, l: { ...localStorage } }));
  assert.ok(!stored.includes(admin) && !stored.includes(pullOnly), stored);
  assert.deepEqual(await context.cookies(), []);
  await page.reload();
  await page.getByLabel('Token').waitFor();
  assert.equal(await page.getByText('Signed in as').count(), 0);
});

await test('readable at phone width', async (page) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await signIn(page, admin);
  for (const [hash, name] of [['#/repos', 'phone-repositories'], ['#/repos/acme/web/tags/1.0.0', 'phone-manifest']]) {
    await page.goto(`${ui}${hash}`);
    await page.locator('.page table, .page .verdict').first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 390, `the page is ${overflow} px wide`);
    await shot(page, name);
  }
});

await test('usable by keyboard', async (page) => {
  await page.goto(ui);
  await page.getByLabel('Token').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'token', 'the token field has the focus');
  await page.keyboard.type(admin);
  await page.keyboard.press('Enter');
  await page.getByText('Signed in as').waitFor();
  await page.getByRole('cell', { name: 'acme/web' }).waitFor();
  await page.locator('a[href="#/repos/acme/web"]').focus();
  await page.keyboard.press('Enter');
  await page.getByRole('link', { name: '1.0.0' }).waitFor();
});

await browser.close();
process.exit(failures ? 1 : 0);
