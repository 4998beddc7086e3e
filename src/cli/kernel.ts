// Commands that act on the configuration and the kernel directly (no daemon): serve, check, plan,
// down. Their heavy modules are imported when the command runs, so the other commands start fast.
import type { Command } from '@commander-js/extra-typings';
import type { Config } from '../config.ts';

/** The configuration file of `-c`; its module is imported only when a command needs it. */
async function loadConfigOf(opts: { config: string }): Promise<Config> {
  const { loadConfig } = await import('../config.ts');
  return loadConfig(opts.config);
}

export function registerKernelCommands(program: Command): void {
  program
    .command('serve')
    .description('run the daemon: build every network and serve metadata (SIGHUP reloads, SIGTERM stops)')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .action(async (opts) => {
      const { serve } = await import('../daemon/serve.ts');
      const daemon = await serve(opts.config);
      await daemon.done;
    });

  program
    .command('check')
    .description('validate the configuration file and exit')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'print the result as JSON')
    .action(async (opts) => {
      const cfg = await loadConfigOf(opts);
      const result = { ok: true, file: cfg.path, networks: cfg.networks.length, vms: cfg.vms.length };
      process.stdout.write(
        opts.json ? `${JSON.stringify(result)}\n` : `${cfg.path}: valid (${result.networks} networks, ${result.vms} VMs)\n`,
      );
    });

  program
    .command('plan')
    .description('print what serve would change in the kernel, without changing anything')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'print the plan as JSON')
    .action(async (opts) => {
      const { createRunner } = await import('../netns/run.ts');
      const { desiredState } = await import('../controller/desired.ts');
      const { observe } = await import('../controller/observe.ts');
      const { formatPlan, isEmpty, plan } = await import('../controller/plan.ts');
      const cfg = await loadConfigOf(opts);
      const runner = createRunner();
      const desired = desiredState({ namespacePrefix: cfg.namespace_prefix, listenPort: cfg.listen_port, networks: cfg.networks });
      const observed = await observe(runner, {
        namespacePrefix: cfg.namespace_prefix,
        lookInto: [...desired.networks.values()].map((d) => d.netns),
      });
      const p = plan(desired, observed);
      if (opts.json) process.stdout.write(`${JSON.stringify(p)}\n`);
      else process.stdout.write(isEmpty(p) ? 'nothing to change\n' : `${formatPlan(p)}\n`);
    });

  program
    .command('down')
    .description('remove every namespace, veth, bridge and nft table imds created (the daemon must be stopped)')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'print the result as JSON')
    .option('--purge-state', 'also delete state_dir (the store: networks, VMs, passwords)')
    .action(async (opts) => {
      const { runningDaemon } = await import('../pidfile.ts');
      const { ImdsError } = await import('../errors.ts');
      const { createLogger } = await import('../log.ts');
      const { teardown } = await import('../controller/teardown.ts');
      const { createRunner } = await import('../netns/run.ts');
      const cfg = await loadConfigOf(opts);
      const pid = runningDaemon(cfg.state_dir);
      if (pid !== undefined) {
        throw new ImdsError('DAEMON_RUNNING', `the daemon (pid ${pid}) is running; stop it first (systemctl stop imds)`, {
          details: { pid },
        });
      }
      const log = createLogger({ level: 'warn', destination: process.stderr });
      const result = await teardown(createRunner(), { namespacePrefix: cfg.namespace_prefix, dhcpDir: cfg.dhcp_dir }, log);
      if (opts.purgeState) {
        const { rmSync } = await import('node:fs');
        rmSync(cfg.state_dir, { recursive: true, force: true });
      }
      if (opts.json) process.stdout.write(`${JSON.stringify({ ...result, purged: opts.purgeState === true })}\n`);
      else {
        if (result.stopped.length > 0) process.stdout.write(`stopped dnsmasq: pid ${result.stopped.join(', ')}\n`);
        process.stdout.write(result.removed.length === 0 ? 'nothing to remove\n' : `removed: ${result.removed.join(', ')}\n`);
      }
    });
}
