// The official OpenAI Node SDK against our server: a different multipart encoder and HTTP
// stack than Python's, the same results expected. run.py starts it as
//   node node_sdk.mjs <base_url> <api_key> <responses.jsonl> <node_dir>
// It prints one `PASS name` or `FAIL name: reason` line per case and appends every JSON
// response it received to <responses.jsonl> for the schema checks.

import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [baseURL, apiKey, recordPath, nodeDir] = process.argv.slice(2);
// The SDK lives in the git-ignored node folder beside this script, not next to it.
const require = createRequire(join(nodeDir, 'package.json'));
const OpenAI = require('openai');
const { toFile, NotFoundError, BadRequestError } = OpenAI;

async function recordingFetch(input, init) {
  const response = await fetch(input, init);
  const type = response.headers.get('content-type') ?? '';
  if (type.startsWith('application/json') || !response.ok) {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const record = {
      method: (init?.method ?? input.method ?? 'GET').toUpperCase(),
      path: url.pathname,
      status: response.status,
      content_type: type,
      body: await response.clone().text(),
    };
    appendFileSync(recordPath, JSON.stringify(record) + '\n');
  }
  return response;
}

const client = new OpenAI({ apiKey, baseURL, fetch: recordingFetch });

function check(condition, reason) {
  if (!condition) throw new Error(reason);
}

function checkEq(actual, expected, what) {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

const md5 = (data) => createHash('md5').update(data).digest('hex');

let failed = 0;
async function testCase(name, body) {
  try {
    await body();
    console.log(`PASS ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name}: ${String(error?.stack ?? error).split('\n').slice(0, 2).join(' ')}`);
  }
}

let completedFile = null;
const chunks = [randomBytes(70_000), randomBytes(1), randomBytes(33_333)];
const data = Buffer.concat(chunks);

await testCase('uploads.create, parts.create in shuffled order, complete with md5', async () => {
  const upload = await client.uploads.create({
    bytes: data.length, filename: 'node.jsonl', mime_type: 'text/jsonl', purpose: 'batch',
  });
  checkEq(upload.status, 'pending', 'status');
  const ids = new Array(chunks.length);
  for (const index of [2, 0, 1]) {
    const part = await client.uploads.parts.create(upload.id, {
      data: await toFile(chunks[index], `part-${index}`),
    });
    checkEq(part.upload_id, upload.id, 'part.upload_id');
    ids[index] = part.id;
  }
  const done = await client.uploads.complete(upload.id, { part_ids: ids, md5: md5(data) });
  checkEq(done.status, 'completed', 'status after complete');
  checkEq([done.file?.bytes, done.file?.filename, done.file?.purpose], [data.length, 'node.jsonl', 'batch'], 'file');
  completedFile = done.file;
});

await testCase('files.list, retrieve, content, delete', async () => {
  check(completedFile, 'needs the File of the previous case');
  const listed = [];
  for await (const file of client.files.list({ limit: 2 })) listed.push(file.id);
  check(listed.includes(completedFile.id), 'the File is listed');
  checkEq(listed.length, new Set(listed).size, 'no File listed twice across pages');
  const retrieved = await client.files.retrieve(completedFile.id);
  checkEq(retrieved, completedFile, 'retrieve');
  const content = Buffer.from(await (await client.files.content(completedFile.id)).arrayBuffer());
  check(content.equals(data), 'content returns the uploaded bytes in order');
  const deleted = await client.files.delete(completedFile.id);
  checkEq(deleted, { id: completedFile.id, object: 'file', deleted: true }, 'delete');
});

await testCase('refusals are the SDK error classes with our param and message', async () => {
  try {
    await client.files.retrieve('file-doesnotexist');
    throw new Error('retrieve of an unknown File succeeded');
  } catch (error) {
    check(error instanceof NotFoundError, `expected NotFoundError, got ${error?.constructor?.name}`);
    checkEq([error.status, error.param, error.error?.message], [404, 'file_id', 'No such File object: file-doesnotexist'], 'error');
  }
  const upload = await client.uploads.create({ bytes: 1, filename: 'x.jsonl', mime_type: 'text/jsonl', purpose: 'batch' });
  try {
    await client.uploads.complete(upload.id, { part_ids: [] });
    throw new Error('complete with no parts succeeded');
  } catch (error) {
    check(error instanceof BadRequestError, `expected BadRequestError, got ${error?.constructor?.name}`);
    checkEq([error.status, error.param, error.error?.message], [400, 'part_ids', "[] is too short - 'part_ids'"], 'error');
  }
  await client.uploads.cancel(upload.id);
});

process.exit(failed ? 1 : 0);
