import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { openApiDocument } from '../../src/server/openapi.ts';

describe('OpenAPI document', () => {
  it('docs/openapi.json is what the route schemas generate (run `npm run openapi` after changing them)', async () => {
    const committed = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8')) as unknown;
    assert.deepEqual(committed, JSON.parse(JSON.stringify(await openApiDocument())));
  });
});
