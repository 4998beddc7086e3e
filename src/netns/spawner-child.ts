// The spawner: a small helper process that starts commands for the daemon (see run.ts). Starting a
// process from the daemon stalls its event loop while the kernel copies the daemon's page tables
// (~10 ms at ~150 MB RSS on the test hosts), during which no guest is answered; from this process,
// a few MB of plain Node, the copy is cheap and the daemon's loop never waits. One request per
// stdin line; per request a `started` line (the command's pid) and an answer line (JSON); it exits
// when its stdin closes (the daemon went).
// No imports beyond Node: it must start fast and stay small.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

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
  const out: Buffer[] = [];
  const errs: Buffer[] = [];
  let size = 0;
  let timedOut = false;
  let failed: NodeJS.ErrnoException | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, req.timeoutMs);
  const collect = (sink: Buffer[]) => (chunk: Buffer) => {
    size += chunk.length;
    if (size > req.maxOutput) child.kill('SIGKILL');
    else sink.push(chunk);
  };
  child.stdout?.on('data', collect(out));
  child.stderr?.on('data', collect(errs));
  child.stdin?.on('error', () => undefined);
  child.stdin?.end(req.stdin);
  child.on('error', (e: NodeJS.ErrnoException) => {
    failed = e;
  });
  child.on('close', (code, signal) => {
    clearTimeout(timer);
    if (failed !== undefined && out.length === 0 && errs.length === 0) {
      answer({ id: req.id, error: failed.code ?? 'ESPAWN', message: failed.message });
      return;
    }
    answer({
      id: req.id,
      code: code ?? -1,
      signal,
      timedOut,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(errs).toString('utf8'),
    });
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
