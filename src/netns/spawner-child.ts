// The spawner: a small helper process that starts commands for the daemon (see run.ts). Starting a
// process from the daemon stalls its event loop while the kernel copies the daemon's page tables
// (~10 ms at ~150 MB RSS on the test hosts), during which no guest is answered; from this process,
// a few MB of plain Node, the copy is cheap and the daemon's loop never waits. One request per
// stdin line; per request a `started` line (the command's pid) and an answer line (JSON); it exits
// when its stdin closes (the daemon went).
// No imports beyond Node and child-output.ts (itself only Node types): it must start fast and stay
// small. It has no addon either, so a command for a namespace comes as `nsenter --net=… --` (run.ts).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { collectOutput } from './child-output.ts';

interface Request {
  id: number;
  argv: string[];
  stdin: string;
  timeoutMs: number;
  maxOutput: number;
  env: Record<string, string>;
}

function answer(message: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function run(req: Request): void {
  const [file, ...args] = req.argv;
  if (file === undefined) return answer({ id: req.id, error: 'EINVAL', message: 'empty argv' });
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...req.env } });
  } catch (err) {
    return answer({ id: req.id, error: (err as NodeJS.ErrnoException).code ?? 'ESPAWN', message: (err as Error).message });
  }
  // Its pid, at once: nftables events of its transaction can reach the daemon before its exit does.
  if (child.pid !== undefined) answer({ id: req.id, started: child.pid });
  let failed: NodeJS.ErrnoException | undefined;
  collectOutput(child, { stdin: req.stdin, timeoutMs: req.timeoutMs, maxOutput: req.maxOutput }, (outcome, wroteAnything) => {
    if (failed !== undefined && !wroteAnything) {
      answer({ id: req.id, error: failed.code ?? 'ESPAWN', message: failed.message });
      return;
    }
    const { code, signal, timedOut, stdout, stderr } = outcome;
    answer({ id: req.id, code, signal, timedOut, stdout, stderr });
  });
  child.on('error', (e: NodeJS.ErrnoException) => {
    failed = e;
  });
}

createInterface({ input: process.stdin }).on('line', (line) => {
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    return;
  }
  run(req);
});
process.stdin.on('end', () => process.exit(0));
