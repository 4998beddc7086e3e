// Writes docs/openapi.json from the admin API's route schemas: `npm run openapi`.
import { writeFileSync } from 'node:fs';
import { openApiDocument } from '../src/server/openapi.ts';

const path = new URL('../docs/openapi.json', import.meta.url);
writeFileSync(path, `${JSON.stringify(await openApiDocument(), null, 2)}\n`);
process.stdout.write(`wrote ${path.pathname}\n`);
