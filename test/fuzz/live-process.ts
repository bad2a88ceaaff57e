import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, type Dirent, promises as fs, type WriteStream } from 'node:fs';
import { OUTPOST_CLI } from '../harness/processes.js';

// A live `outpost` process under fuzz: its output goes to a log file with only a tail kept in
// memory (a million refused inputs log a lot), its RSS is sampled from /proc, and an exit the
// fuzzer did not ask for is a crash, kept with the stderr that shows its stack.

const TAIL_BYTES = 64 * 1024;

export interface RssSample {
  at: number;
  // Inputs delivered to all targets when the sample was taken.
  inputs: number;
  rssBytes: number;
  // Open file descriptors (sockets, files): a leaked connection shows here before it shows in RSS.
  fds: number;
  // Bytes the process keeps on disk (its data directories), null when it has none to watch.
  storedBytes: number | null;
}

export interface CrashRecord {
  target: string;
  at: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  // The end of what the process printed: Node prints an uncaught exception's stack there.
  stderrTail: string;
}

export interface LiveProcess {
  name: string;
  url: string;
  port: number;
  pid(): number | undefined;
  alive(): boolean;
  // Resolves when the current incarnation exits (for crash detection without polling).
  exited(): Promise<void>;
  tail(): string;
  samples: RssSample[];
  // Called when the process exits without being asked to; the campaign replaces it.
  onCrash: (crash: CrashRecord) => void;
  sample(inputs: number): Promise<void>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface LiveProcessOptions {
  name: string;
  args: (port: number) => string[];
  logFile: string;
  env?: NodeJS.ProcessEnv;
  // Daemons that print {"event":"listening","url","port"} on stdout; others are ready at spawn.
  listens: boolean;
  // Directories whose size is sampled as what the process stores (update logs, state, store).
  dataDirs?: string[];
}

export async function readRss(pid: number): Promise<number | null> {
  try {
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export async function countFds(pid: number): Promise<number | null> {
  try {
    return (await fs.readdir(`/proc/${pid}/fd`)).length;
  } catch {
    return null;
  }
}

// Total size of the files under the directories, walked without recursion; files that vanish
// while walking (LevelDB compaction) are skipped.
export async function directoryBytes(roots: string[]): Promise<number> {
  let total = 0;
  const stack = [...roots];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    let entries: Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const entry of entries) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory()) stack.push(path);
      else if (entry.isFile())
        total += await fs.stat(path).then(
          (st) => st.size,
          () => 0,
        );
    }
  }
  return total;
}

export async function startLiveProcess(options: LiveProcessOptions): Promise<LiveProcess> {
  let child: ChildProcess | null = null;
  let tail = '';
  let stopping = false;
  let exitedPromise: Promise<void> = Promise.resolve();
  let url = '';
  let port = 0;
  let log: WriteStream | null = null;

  const append = (d: Buffer): void => {
    log?.write(d);
    tail = (tail + d.toString()).slice(-TAIL_BYTES);
  };

  async function spawnOnce(): Promise<void> {
    stopping = false;
    tail = '';
    log = createWriteStream(options.logFile, { flags: 'a' });
    const proc = spawn(process.execPath, [OUTPOST_CLI, ...options.args(port)], {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let stdout = '';
    proc.stdout!.on('data', (d: Buffer) => {
      append(d);
      if (stdout.length < 4096) stdout += d.toString();
    });
    proc.stderr!.on('data', append);
    exitedPromise = new Promise((resolve) =>
      proc.on('close', (code, signal) => {
        const file = log;
        log = null;
        file?.end();
        if (!stopping)
          live.onCrash({ target: options.name, at: Date.now(), code, signal, stderrTail: tail.slice(-8192) });
        resolve();
      }),
    );
    if (!options.listens) return;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const line = stdout.split('\n').find((l) => l.startsWith('{"event":"listening"'));
      if (line) {
        const listening = JSON.parse(line) as { url: string; port: number };
        url = listening.url;
        port = listening.port;
        return;
      }
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new Error(`${options.name} exited before listening:\n${tail.slice(-4000)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${options.name} did not listen within 30 s:\n${tail.slice(-4000)}`);
  }

  const samples: RssSample[] = [];
  const live: LiveProcess = {
    name: options.name,
    get url() {
      return url;
    },
    get port() {
      return port;
    },
    pid: () => child?.pid,
    alive: () => child !== null && child.exitCode === null && child.signalCode === null,
    exited: () => exitedPromise,
    tail: () => tail,
    samples,
    onCrash: () => undefined,
    async sample(inputs) {
      const pid = child?.pid;
      if (pid === undefined || !live.alive()) return;
      const [rssBytes, fds, storedBytes] = await Promise.all([
        readRss(pid),
        countFds(pid),
        options.dataDirs ? directoryBytes(options.dataDirs) : Promise.resolve(null),
      ]);
      if (rssBytes !== null && fds !== null) samples.push({ at: Date.now(), inputs, rssBytes, fds, storedBytes });
    },
    async restart() {
      await live.stop();
      // A new incarnation: growth is judged per incarnation, so earlier samples no longer count.
      samples.length = 0;
      await spawnOnce();
    },
    async stop() {
      stopping = true;
      if (child && live.alive()) child.kill('SIGKILL');
      await exitedPromise;
    },
  };
  await spawnOnce();
  return live;
}
