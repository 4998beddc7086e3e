// Mutation check (scripts/mutants.sh): deliberate bugs a reviewer fears most, applied one at a time
// to a scratch copy of the tree, each followed by the tests that should catch it. Every mutant
// must be killed (its tests fail); each selection of tests is first run unmutated and must pass,
// so that a kill means the mutant was caught, not that the tests were red anyway.
//   node --import tsx scripts/mutants.ts [--list] [--check] [--only NAME[,NAME…]] [--no-control] [--keep]
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { MUTANTS, type Mutant, type Selection } from './mutants/catalogue.ts';
import { RUN_OWNER } from '../test/helpers/sandbox.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i === -1 ? undefined : (args[i + 1] ?? '');
};

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** A copy of the working tree (tracked and new files), sharing node_modules and the built addon. */
function scratchCopy(): string {
  const dir = join(tmpdir(), `imdstest-${RUN_OWNER}-mutants`);
  rmSync(dir, { recursive: true, force: true });
  const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '-z'], { cwd: ROOT }).toString().split('\0').filter(Boolean);
  for (const f of files) {
    const from = join(ROOT, f);
    let st;
    try {
      st = statSync(from);
    } catch {
      continue; // deleted in the working tree
    }
    if (!st.isFile()) continue;
    mkdirSync(dirname(join(dir, f)), { recursive: true });
    copyFileSync(from, join(dir, f));
    chmodSync(join(dir, f), st.mode);
  }
  // node_modules is shared, entry by entry, except the addon (a link to ../native): the copy's own
  // is built from the copy's native/, so that the native mutants reach the daemons under test.
  mkdirSync(join(dir, 'node_modules'));
  for (const entry of readdirSync(join(ROOT, 'node_modules'))) {
    if (entry !== 'imds-netns') symlinkSync(join(ROOT, 'node_modules', entry), join(dir, 'node_modules', entry));
  }
  symlinkSync('../native', join(dir, 'node_modules', 'imds-netns'));
  return dir;
}

function selectionKey(s: Selection): string {
  const plane = s.plane === undefined ? '' : `IMDS_TEST_DATA_PLANE=${s.plane} `;
  return `${plane}${s.files.join(' ')}${s.pattern === undefined ? '' : ` -- "${s.pattern}"`}`;
}

/** Runs the selected tests in `dir`; true when they pass. The output goes to `log`. */
function runTests(dir: string, s: Selection, log: string): { passed: boolean; ms: number } {
  const t0 = performance.now();
  const argv = ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=900000', '--test-reporter=spec'];
  if (s.pattern !== undefined) argv.push(`--test-name-pattern=${s.pattern}`);
  argv.push(...s.files);
  const r = spawnSync(process.execPath, argv, {
    cwd: dir,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, IMDS_TEST_SKIPS: '/dev/null', IMDS_TEST_DATA_PLANE: s.plane ?? 'native' },
  });
  writeFileSync(log, `${r.stdout}\n${r.stderr}`);
  // A pattern that matches no test passes with nothing run: that is no pass (nor a kill) here.
  // (Tests the pattern leaves out are reported as skipped.)
  const count = (what: string): number => Number(new RegExp(`^ℹ ${what} (\\d+)$`, 'm').exec(r.stdout)?.[1] ?? 0);
  const ran = count('pass') + count('fail');
  if (ran === 0) throw new Error(`no test ran for ${selectionKey(s)} (see ${log})`);
  return { passed: r.status === 0, ms: performance.now() - t0 };
}

/** Compiles the copy's TypeScript, and its addon when `native`. */
function build(dir: string, native: boolean): void {
  execFileSync(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: dir, stdio: 'pipe' });
  // The addon's own install script (node-gyp rebuild, with npm's node-gyp), as `npm ci` runs it.
  if (native) execFileSync('npm', ['run', '--silent', 'install'], { cwd: join(dir, 'native'), stdio: 'pipe' });
}

const touchesNative = (m: Mutant): boolean => m.edits.some((e) => e.file.startsWith('native/'));

/** Applies a mutant's edits in `dir`; returns the originals to restore. Each `find` must occur exactly once. */
function apply(dir: string, m: Mutant): Map<string, string> {
  const originals = new Map<string, string>();
  for (const e of m.edits) {
    const path = join(dir, e.file);
    const text = originals.get(path) ?? readFileSync(path, 'utf8');
    if (!originals.has(path)) originals.set(path, text);
    const current = readFileSync(path, 'utf8');
    const at = current.indexOf(e.find);
    if (at === -1 || current.indexOf(e.find, at + 1) !== -1) {
      for (const [p, t] of originals) writeFileSync(p, t);
      throw new Error(
        `mutant ${m.name}: the text to replace occurs ${at === -1 ? 'nowhere' : 'more than once'} in ${e.file}: ${JSON.stringify(e.find)}`,
      );
    }
    writeFileSync(path, current.slice(0, at) + e.replace + current.slice(at + e.find.length));
  }
  return originals;
}

function main(): number {
  const only = flag('--only')?.split(',').filter(Boolean);
  const chosen = only === undefined ? MUTANTS : MUTANTS.filter((m) => only.includes(m.name));
  if (only !== undefined && chosen.length !== only.length)
    throw new Error(`unknown mutant: ${only.filter((n) => !MUTANTS.some((m) => m.name === n)).join(', ')}`);
  if (args.includes('--check')) {
    // Every mutant still applies to the tree as it is (its `find` occurs exactly once).
    const bad: string[] = [];
    for (const m of chosen) {
      for (const e of m.edits) {
        const text = readFileSync(join(ROOT, e.file), 'utf8');
        const at = text.indexOf(e.find);
        if (at === -1 || text.indexOf(e.find, at + 1) !== -1)
          bad.push(`${m.name}: ${e.file}: ${at === -1 ? 'not found' : 'found more than once'}`);
      }
    }
    for (const b of bad) say(b);
    say(bad.length === 0 ? `mutants: all ${chosen.length} apply` : `mutants: ${bad.length} do not apply`);
    return bad.length === 0 ? 0 : 1;
  }
  if (args.includes('--list')) {
    for (const m of chosen) say(`${m.name.padEnd(30)} ${m.fear}\n${' '.repeat(31)}caught by: ${selectionKey(m.tests)}`);
    return 0;
  }
  const dir = scratchCopy();
  const logs = join(tmpdir(), `imds-mutants-${new Date().toISOString().replace(/[:.]/g, '')}`);
  mkdirSync(logs);
  say(`mutants: ${chosen.length}, scratch copy ${dir}, test output in ${logs}`);
  try {
    build(dir, true);
    const controls = new Map<string, boolean>();
    if (!args.includes('--no-control')) {
      for (const s of new Map(chosen.map((m) => [selectionKey(m.tests), m.tests])).values()) {
        const r = runTests(dir, s, join(logs, `control-${controls.size}.log`));
        controls.set(selectionKey(s), r.passed);
        say(`control ${r.passed ? 'passed' : 'FAILED'} (${(r.ms / 1000).toFixed(0)} s): ${selectionKey(s)}`);
      }
    }
    const rows: string[] = [];
    let survivors = 0;
    for (const m of chosen) {
      if (controls.get(selectionKey(m.tests)) === false) {
        rows.push(`| ${m.name} | ${m.fear} | ${selectionKey(m.tests)} | not run: control failed |`);
        survivors++;
        continue;
      }
      const originals = apply(dir, m);
      let verdict: string;
      try {
        build(dir, touchesNative(m));
        const r = runTests(dir, m.tests, join(logs, `${m.name}.log`));
        verdict = r.passed ? `SURVIVED (${(r.ms / 1000).toFixed(0)} s)` : `killed (${(r.ms / 1000).toFixed(0)} s)`;
        if (r.passed) survivors++;
      } catch (err) {
        const built = (err as { stderr?: Buffer }).stderr?.toString().slice(0, 300);
        verdict = `INVALID: ${built === undefined ? String(err) : `does not build: ${built}`}`;
        survivors++;
      } finally {
        for (const [p, t] of originals) writeFileSync(p, t);
        if (touchesNative(m)) build(dir, true); // the next mutant's daemons load the unmutated addon
      }
      say(`${m.name}: ${verdict}`);
      rows.push(`| ${m.name} | ${m.fear} | ${selectionKey(m.tests)} | ${verdict} |`);
    }
    build(dir, chosen.some(touchesNative));
    say(`\n| mutant | the bug | tests | result |\n|---|---|---|---|\n${rows.join('\n')}`);
    say(survivors === 0 ? `\nmutants: all ${chosen.length} killed` : `\nmutants: ${survivors} of ${chosen.length} NOT killed`);
    return survivors === 0 ? 0 : 1;
  } finally {
    if (!args.includes('--keep')) rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = main();
