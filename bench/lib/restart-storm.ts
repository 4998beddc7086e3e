// Failed guest requests across a restart under a boot storm: back-to-back storms (every guest runs
// cloud-init's sequence on a new connection per request) while the daemon is replaced, side by
// side for the two ways a daemon can be replaced here:
//   - `imds restart` (the hand-over: the listening sockets pass to the successor, connections wait
//     in the kernel's backlog) — what a restart without systemd is; under systemd the file
//     descriptor store does the same (the system test measures `systemctl restart` and an upgrade);
//   - stop, then start (the sockets close with the process): what every restart was before.
import { MAIN, sh, type Sandbox } from '../../test/helpers/sandbox.ts';
import { storm, type StormResult } from './measure.ts';

export interface RestartStormRun {
  mode: 'imds restart (hand-over)' | 'stop, then start';
  storms: number;
  requests: number;
  failed: number;
  /** From the command to the new daemon ready, ms. */
  replace_ms: number;
}

/** Runs storms back to back until `done()`; the totals. */
async function stormsUntil(files: { guestsFile: string; pathsFile: string }, warm: string, done: () => boolean): Promise<StormResult[]> {
  const out: StormResult[] = [];
  do out.push(await storm(files.guestsFile, files.pathsFile, warm));
  while (!done());
  return out;
}

function summary(mode: RestartStormRun['mode'], storms: StormResult[], replaceMs: number): RestartStormRun {
  return {
    mode,
    storms: storms.length,
    // Every request a guest was to make; one without an HTTP answer failed (refused, reset, timed
    // out, cut short), and a refused connection ends that guest's sequence: the requests it never
    // made count as failed too.
    requests: storms.reduce((n, s) => n + s.guests * s.requests_per_guest, 0),
    failed: storms.reduce((n, s) => n + s.guests * s.requests_per_guest - (s.requests - s.failures), 0),
    replace_ms: Math.round(replaceMs),
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One run of each mode on a daemon serving from `configPath` (its instance `instance`), with the
 * storm files of one guest per network. Leaves no daemon running.
 */
export async function restartUnderStorm(
  sb: Sandbox,
  configPath: string,
  instance: string,
  files: { guestsFile: string; pathsFile: string },
  warm: string,
): Promise<RestartStormRun[]> {
  const runs: RestartStormRun[] = [];
  let finished = false;
  // The hand-over.
  const d = await sb.startDaemon(configPath);
  void d.expectExit(120_000); // it stops by itself once its successor is ready
  let successor = 0;
  try {
    const load = stormsUntil(files, warm, () => finished);
    await sleep(300);
    const t0 = performance.now();
    const out = await sh([process.execPath, MAIN, '--admin-socket', sb.adminSocket(instance), 'restart', '--json']).catch(
      async (err: unknown) => {
        // What the daemon said and how it ended, for the report.
        await sleep(500);
        process.stderr.write(`${d.tail(30)}\nexit ${d.child.exitCode} ${d.child.signalCode}\n`);
        throw err;
      },
    );
    successor = (JSON.parse(out.stdout) as { successor: number }).successor;
    await d.expectExit(60_000);
    const replaceMs = performance.now() - t0;
    await sleep(500);
    finished = true;
    runs.push(summary('imds restart (hand-over)', await load, replaceMs));
  } finally {
    finished = true;
    if (successor > 0 && alive(successor)) process.kill(successor, 'SIGTERM');
    for (let i = 0; i < 300 && successor > 0 && alive(successor); i++) await sleep(50);
  }
  // Stop, then start.
  finished = false;
  const first = await sb.startDaemon(configPath);
  const load = stormsUntil(files, warm, () => finished);
  try {
    await sleep(300);
    const t0 = performance.now();
    await first.stop();
    const second = await sb.startDaemon(configPath);
    const replaceMs = performance.now() - t0;
    await sleep(500);
    finished = true;
    runs.push(summary('stop, then start', await load, replaceMs));
    await second.stop();
  } finally {
    finished = true;
    await load.catch(() => undefined);
  }
  return runs;
}

export function restartStormTable(runs: RestartStormRun[]): string {
  const rows = runs.map((r) => `| ${r.mode} | ${r.storms} | ${r.requests} | ${r.failed} | ${r.replace_ms} |`);
  return (
    `\n| replacing the daemon under back-to-back boot storms | storms | requests | failed | command to new daemon ready, ms ` +
    `|\n|---|---|---|---|---|\n${rows.join('\n')}\n`
  );
}
