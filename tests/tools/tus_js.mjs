// Uploads a file through tus-js-client (npm), unchanged, in Node; with
// PARALLEL > 1 as tus concatenation (`parallelUploads`). Prints the final
// upload's URL as JSON.
//
// usage: node tus_js.mjs ENDPOINT TOKEN FILE PARALLEL [DIGEST]
import fs from 'node:fs';
import * as tus from 'tus-js-client';

const [endpoint, token, path, parallel, digest] = process.argv.slice(2);
const file = fs.readFileSync(path);
const upload = new tus.Upload(file, {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: digest ? { digest } : {},
  parallelUploads: Number(parallel),
  retryDelays: [0, 100, 300, 1000],
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url }));
  },
});
upload.start();
