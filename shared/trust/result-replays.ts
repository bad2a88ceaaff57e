import { canonicalJson } from '../crypto/canonical.js';
import { verifyPayloadSignature } from '../crypto/signatures.js';
import type { SignedResult } from '../schemas/report.js';

export interface ResultAnomaly {
  seq: number;
  problem: 'bad-signature' | 'foreign-key' | 'replayed' | 'conflicting-seq' | 'answers-unknown-intent';
  detail: string;
}

// A host numbers its results 1, 2, 3…; each is signed and names the intent it answers. Anyone
// who copies an old result (a relay, a compromised coordinator) produces a duplicate sequence
// number, which this makes visible instead of letting it pass as a fresh report.
export function findResultAnomalies(
  results: SignedResult[],
  hostKey: string,
  knownIntentDigests?: ReadonlySet<string>,
): ResultAnomaly[] {
  const anomalies: ResultAnomaly[] = [];
  const bySeq = new Map<number, string>();
  for (const signed of results) {
    const { seq } = signed.result;
    if (signed.signature.publicKey !== hostKey) {
      anomalies.push({
        seq,
        problem: 'foreign-key',
        detail: `result #${seq} is signed by ${signed.signature.publicKey.slice(0, 12)}…, not the host key`,
      });
      continue;
    }
    if (!verifyPayloadSignature('result', signed.result, signed.signature)) {
      anomalies.push({ seq, problem: 'bad-signature', detail: `result #${seq} signature does not verify` });
      continue;
    }
    const content = canonicalJson(signed.result);
    const earlier = bySeq.get(seq);
    if (earlier === content)
      anomalies.push({ seq, problem: 'replayed', detail: `result #${seq} appears more than once` });
    else if (earlier !== undefined)
      anomalies.push({ seq, problem: 'conflicting-seq', detail: `two different results claim #${seq}` });
    else bySeq.set(seq, content);
    if (
      knownIntentDigests &&
      signed.result.outcome !== 'refused' &&
      !knownIntentDigests.has(signed.result.intentDigest)
    ) {
      anomalies.push({
        seq,
        problem: 'answers-unknown-intent',
        detail: `result #${seq} answers an intent not in the desired document`,
      });
    }
  }
  return anomalies;
}
