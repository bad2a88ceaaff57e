import { readFileSync } from 'node:fs';

// node dist/test/bench/heap-summary.js FILE.heapsnapshot [HOSTS]
// Sums the self size of every heap object by kind and constructor, largest first, and per host
// when HOSTS is given. For snapshots taken by `npm run bench -- --heap-snapshot DIR`.

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

const args = process.argv.slice(2);
const baseAt = args.indexOf('--base');
const base = baseAt >= 0 ? args.splice(baseAt, 2)[1] : undefined;
const [file, hostsArg] = args;
if (!file) {
  console.error('usage: node dist/test/bench/heap-summary.js FILE.heapsnapshot [HOSTS] [--base BEFORE.heapsnapshot]');
  process.exit(2);
}
const hosts = hostsArg ? Number(hostsArg) : 0;

interface Group {
  count: number;
  bytes: number;
}

function summarize(path: string): { groups: Map<string, Group>; total: number; objects: number } {
  const heap = JSON.parse(readFileSync(path, 'utf8')) as HeapSnapshot;
  const fields = heap.snapshot.meta.node_fields;
  const types = heap.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeIndex = fields.indexOf('type');
  const nameIndex = fields.indexOf('name');
  const sizeIndex = fields.indexOf('self_size');
  const groups = new Map<string, Group>();
  let total = 0;
  for (let i = 0; i < heap.nodes.length; i += width) {
    const type = types[heap.nodes[i + typeIndex]!] ?? '?';
    const size = heap.nodes[i + sizeIndex]!;
    let name = heap.strings[heap.nodes[i + nameIndex]!] ?? '?';
    // Strings, numbers and code have as many names as values: grouped by kind only.
    if (
      type === 'string' ||
      type === 'concatenated string' ||
      type === 'sliced string' ||
      type === 'code' ||
      type === 'number'
    )
      name = '';
    if (name.length > 60) name = `${name.slice(0, 57)}...`;
    const key = `${type}${name ? ` ${name}` : ''}`;
    const group = groups.get(key) ?? { count: 0, bytes: 0 };
    group.count += 1;
    group.bytes += size;
    groups.set(key, group);
    total += size;
  }
  return { groups, total, objects: heap.nodes.length / width };
}

const after = summarize(file);
const before = base ? summarize(base) : { groups: new Map<string, Group>(), total: 0, objects: 0 };
const keys = new Set([...after.groups.keys(), ...before.groups.keys()]);
const rows = [...keys]
  .map((key) => {
    const a = after.groups.get(key) ?? { count: 0, bytes: 0 };
    const b = before.groups.get(key) ?? { count: 0, bytes: 0 };
    return { key, count: a.count - b.count, bytes: a.bytes - b.bytes };
  })
  .sort((x, y) => y.bytes - x.bytes)
  .slice(0, 45);
const total = after.total - before.total;
console.log(
  `${file}${base ? ` minus ${base}` : ''}: ${(total / 1e6).toFixed(1)} MB in ${after.objects - before.objects} heap objects${hosts ? `, ${(total / hosts / 1000).toFixed(1)} KB per host` : ''}`,
);
console.log(
  `${'bytes'.padStart(12)} ${'count'.padStart(9)} ${hosts ? `${'B/host'.padStart(8)} ${'n/host'.padStart(7)} ` : ''}kind and constructor`,
);
for (const { key, count, bytes } of rows) {
  const perHost = hosts ? `${(bytes / hosts).toFixed(0).padStart(8)} ${(count / hosts).toFixed(1).padStart(7)} ` : '';
  console.log(`${String(bytes).padStart(12)} ${String(count).padStart(9)} ${perHost}${key}`);
}
