// Checks every message example of an AsyncAPI document against the message's
// own schemas: payload, headers and Kafka key (`asyncapi validate` checks the
// document's structure, not its examples). The examples of docs/asyncapi.yaml
// are real records serialized by the Rust types and the schemas come from the
// same types, so a mismatch means the schema and the wire disagree.
//
//   node tools/asyncapi/check-examples.cjs docs/asyncapi.yaml
'use strict';

const { Parser, fromFile } = require('@asyncapi/parser');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

// The integer formats schemars writes (JSON Schema leaves them open).
const INTEGER_FORMATS = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

async function main(file) {
  const { document, diagnostics } = await fromFile(new Parser(), file).parse();
  if (!document) {
    for (const d of diagnostics) console.error(`${d.code}: ${d.message} at ${d.path.join('.')}`);
    throw new Error(`${file} does not parse`);
  }
  // The parser marks schemas with x-parser-* keys; strict mode would refuse them.
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  for (const [name, [min, max]] of Object.entries(INTEGER_FORMATS)) {
    ajv.addFormat(name, { type: 'number', validate: (n) => Number.isInteger(n) && n >= min && n <= max });
  }
  let checked = 0;
  const failures = [];
  const check = (what, schema, value) => {
    if (schema === undefined) return;
    checked += 1;
    const validate = ajv.compile(schema);
    if (!validate(value)) {
      failures.push(`${what}: ${ajv.errorsText(validate.errors, { dataVar: what })}`);
    }
  };
  for (const message of document.components().messages()) {
    const examples = message.examples().all();
    if (examples.length === 0) failures.push(`${message.id()}: no example`);
    const key = message.bindings().get('kafka')?.value()?.key;
    for (const [i, key_example] of (key?.examples ?? []).entries()) {
      check(`${message.id()} key example ${i}`, key, key_example);
    }
    for (const example of examples) {
      const what = `${message.id()} example ${example.name() ?? ''}`.trim();
      if (example.hasPayload()) check(`${what} payload`, message.payload()?.json(), example.payload());
      if (example.hasHeaders()) check(`${what} headers`, message.headers()?.json(), example.headers());
    }
  }
  if (failures.length > 0) {
    for (const f of failures) console.error(`✖ ${f}`);
    throw new Error(`${failures.length} of ${checked} example checks failed`);
  }
  console.log(`${checked} checks of the examples (payloads, headers, keys) against their schemas passed`);
}

main(process.argv[2] ?? 'docs/asyncapi.yaml').catch((error) => {
  console.error(error.message);
  process.exit(1);
});
