// Progress of a long CLI operation (`vm import`) on one status line of stderr — only when stderr is a
// terminal, so scripts, pipes and the journal never see it. The line is rewritten in place and
// cleared when the operation ends; the result goes to stdout as usual.

export interface Progress {
  /** Shows a phase; the elapsed seconds are appended and kept ticking until the next phase or `done`. */
  phase(text: string): void;
  /** Clears the line. */
  done(): void;
}

interface ProgressStream {
  isTTY?: boolean;
  write(text: string): boolean;
}

const QUIET: Progress = { phase: () => undefined, done: () => undefined };

export function progressOn(stream: ProgressStream = process.stderr, tickMs = 1000): Progress {
  if (stream.isTTY !== true) return QUIET;
  let text = '';
  let since = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const draw = (): void => {
    const seconds = Math.floor((Date.now() - since) / 1000);
    stream.write(`\r\x1b[K${text}${seconds > 0 ? ` (${seconds} s)` : ''}`);
  };
  return {
    phase(next) {
      text = next;
      since = Date.now();
      draw();
      if (timer === undefined) {
        timer = setInterval(draw, tickMs);
        timer.unref();
      }
    },
    done() {
      clearInterval(timer);
      timer = undefined;
      if (text !== '') stream.write('\r\x1b[K');
      text = '';
    },
  };
}

/** "3 networks and 10000 VMs (4.2 MB)" for the import's status line. */
export function importSummary(networks: number, vms: number, bytes: number): string {
  const size = bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.ceil(bytes / 1e3)} kB`;
  return `${networks} network${networks === 1 ? '' : 's'} and ${vms} VM${vms === 1 ? '' : 's'} (${size})`;
}
