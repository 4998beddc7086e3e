// `imds export [-o FILE]`: every network and VM as `imds vm import` reads them (the configuration
// file's `networks:` and `vms:`), YAML by default (`--format json`). Its -o names a file, as
// `vm configdrive`'s does; a file named like an output format (`-o json`) is refused (docs/cli.md).
// User data is written as text when it is UTF-8 text, else as `!!binary` (JSON: user_data_b64). Passwords are secrets: left out unless
// --include-secrets. Export, import into an empty daemon and export again gives the same document.
import { Command } from '@commander-js/extra-typings';
import { stringify } from 'yaml';
import { ImdsError } from '../errors.ts';
import { clientOf } from './network.ts';
import { checkOutputFile } from './output.ts';
import { checkOutput, writeSecretFile } from './write-file.ts';

type Entry = Record<string, unknown>;

interface ExportedDocument {
  networks: Entry[];
  vms: Entry[];
}

/** The bytes as text, when they are UTF-8 with no control characters but tab, CR and LF. */
export function asText(bytes: Buffer): string | undefined {
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) return undefined;
  // eslint-disable-next-line no-control-regex -- the point is to find control characters
  return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text) ? undefined : text;
}

/** A VM of the API's export with its user data as the file carries it: text, or bytes (YAML) / base64 (JSON). */
function vmOut(vm: Entry, format: 'yaml' | 'json'): Entry {
  const b64 = vm['user_data_b64'];
  if (typeof b64 !== 'string') return vm;
  const { user_data_b64: _b64, password, ...rest } = vm;
  const bytes = Buffer.from(b64, 'base64');
  const text = asText(bytes);
  const userData = text !== undefined ? { user_data: text } : format === 'yaml' ? { user_data: bytes } : { user_data_b64: b64 };
  return { ...rest, ...userData, ...(password === undefined ? {} : { password }) };
}

/** The export as the file's text. */
export function exportText(doc: ExportedDocument, format: 'yaml' | 'json'): string {
  const out = { networks: doc.networks, vms: doc.vms.map((v) => vmOut(v, format)) };
  return format === 'json' ? `${JSON.stringify(out, null, 2)}\n` : stringify(out, { customTags: ['binary'], lineWidth: 0 });
}

export function exportCommand(): Command {
  return new Command('export')
    .description('write every network and VM as `imds vm import` reads them (YAML, or JSON)')
    .option('-o, --output <file>', 'write to this file (mode 0600, atomically; refused if it exists unless --force) instead of stdout')
    .option('--format <yaml|json>', 'yaml (the configuration file format) or json', 'yaml')
    .option('--include-secrets', "include the VMs' passwords (secrets: keep the file as safe as the store)")
    .option('--force', 'replace the --output file if it exists')
    .action(async (opts, cmd) => {
      if (opts.format !== 'yaml' && opts.format !== 'json')
        throw new ImdsError('VALIDATION_FAILED', `--format: "${opts.format}" is not yaml or json`, { field: '--format' });
      const format = opts.format;
      if (opts.output !== undefined) {
        checkOutputFile(opts.output, "the document's format is --format yaml|json (standard output without -o)");
        checkOutput(opts.output, { force: opts.force === true, field: '--output' });
      }
      const doc = await clientOf(cmd).call<ExportedDocument>('GET', `/v1/export${opts.includeSecrets === true ? '?secrets=true' : ''}`);
      const text = exportText(doc, format);
      if (opts.output === undefined) {
        process.stdout.write(text);
        return;
      }
      await writeSecretFile(opts.output, Buffer.from(text), { force: opts.force === true, field: '--output' });
      process.stderr.write(`wrote ${opts.output} (${doc.networks.length} networks, ${doc.vms.length} VMs)\n`);
    });
}
