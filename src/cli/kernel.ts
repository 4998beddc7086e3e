// Commands that act on the configuration and the kernel directly (no daemon): serve, check, plan, down.
import type { Command } from '@commander-js/extra-typings';
import { loadConfig } from '../config.ts';
import { desiredState } from '../controller/desired.ts';
import { observe } from '../controller/observe.ts';
import { formatPlan, isEmpty, plan } from '../controller/plan.ts';
import { teardown } from '../controller/teardown.ts';
import { serve } from '../daemon.ts';
import { ImdsError } from '../errors.ts';
import { createLogger } from '../log.ts';
import { createRunner } from '../netns/run.ts';
import { runningDaemon } from '../pidfile.ts';

export function registerKernelCommands(program: Command): void {
  program
    .command('serve')
    .description('run the daemon: build every network and serve metadata (SIGHUP reloads, SIGTERM stops)')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .action(async (opts) => {
      const daemon = await serve(opts.config);
      await daemon.done;
    });

  program
    .command('check')
    .description('validate the configuration file and exit')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'print the result as JSON')
    .action((opts) => {
      const cfg = loadConfig(opts.config);
      const result = { ok: true, file: cfg.path, networks: cfg.networks.length, vms: cfg.vms.length };
      process.stdout.write(opts.json ? `${JSON.stringify(result)}\n` : `${cfg.path}: valid (${result.networks} networks, ${result.vms} VMs)\n`);
    });

  program
    .command('plan')
    .description('print what serve would change in the kernel, without changing anything')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'print the plan as JSON')
    .action(async (opts) => {
      const cfg = loadConfig(opts.config);
      const runner = createRunner();
      const desired = desiredState({ namespacePrefix: cfg.namespace_prefix, listenPort: cfg.listen_port, networks: cfg.networks });
      const observed = await observe(runner, { namespacePrefix: cfg.namespace_prefix, lookInto: [...desired.networks.values()].map((d) => d.netns) });
      const p = plan(desired, observed);
      if (opts.json) process.stdout.write(`${JSON.stringify(p)}\n`);
      else process.stdout.write(isEmpty(p) ? 'nothing to change\n' : `${formatPlan(p)}\n`);
    });

  program
    .command('down')
    .description('remove every namespace, veth, bridge and nft table imds created (the daemon must be stopped)')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'print the result as JSON')
    .action(async (opts) => {
      const cfg = loadConfig(opts.config);
      const pid = runningDaemon(cfg.state_dir);
      if (pid !== undefined) {
        throw new ImdsError('DAEMON_RUNNING', `the daemon (pid ${pid}) is running; stop it first (systemctl stop imds)`, { details: { pid } });
      }
      const log = createLogger({ level: 'warn', destination: process.stderr });
      const result = await teardown(createRunner(), cfg.namespace_prefix, log);
      if (opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else process.stdout.write(result.removed.length === 0 ? 'nothing to remove\n' : `removed: ${result.removed.join(', ')}\n`);
    });
}
