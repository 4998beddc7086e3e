// What system-test runs that are gone left on this host: their containers' processes, root
// directories and cgroups (container.ts), and root builds interrupted in the cache (rootfs.ts).
//   node --import tsx test/system/leftovers.ts --sweep   removes them, says what it removed (exit 0)
//   node --import tsx test/system/leftovers.ts --check   removes them too, but exits 1 if there were any
// scripts/system-test.sh sweeps before the test and checks after it: a run must leave nothing.
import { sweepStaleContainers } from './container.ts';

const mode = process.argv[2];
if (mode !== '--sweep' && mode !== '--check') {
  process.stderr.write('usage: leftovers.ts --sweep|--check\n');
  process.exit(2);
}
const found = await sweepStaleContainers((line) => process.stderr.write(`system-test: ${line}\n`));
if (mode === '--check' && found.length > 0) {
  process.stderr.write(`system-test: FAILED: the run left ${found.length} thing(s) behind:\n${found.map((f) => `  ${f}\n`).join('')}`);
  process.exit(1);
}
