import {
  ENROLLMENT_DOC,
  POLICY_DOC,
  readEnrollments,
  readEnrollRequests,
  readPolicies,
  TIMESTAMP_DOC,
} from '../shared/documents/fleet.js';
import { parseDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import type { Policy } from '../shared/schemas/policy.js';
import { adminForKey, capabilitiesFor, mayReadHost, relayServesHost } from '../shared/trust/capabilities.js';
import { type EnrollmentState, enrollmentState, type HostBinding } from '../shared/trust/enrollment.js';
import { walkPolicyChain } from '../shared/trust/policy-chain.js';
import type { DocumentHost } from './hosted-documents.js';

// Who a connection is, decided from the key it proved and the policy in force.
export type Principal =
  | { kind: 'anonymous'; label: string }
  | { kind: 'admin'; label: string; key: string; name: string }
  | { kind: 'agent'; label: string; key: string; host: string }
  | { kind: 'relay'; label: string; key: string }
  | { kind: 'unknown-key'; label: string; key: string };

export type Access = 'none' | 'read' | 'write';

export interface TrustState {
  enforced: boolean;
  policy(): Policy | null;
  chain(): Policy[];
  bindings(): Map<string, HostBinding>;
  principalForKey(key: string): Principal;
  access(principal: Principal, document: string): Access;
}

// Without --org-root the coordinator runs open (the spine's development mode): every connection
// may read and write everything, and is recorded by address. With it, every connection must
// prove a key, and the policy decides per document.
export async function createTrustState(
  host: DocumentHost,
  pinnedRootKeys: string[],
  logger: Logger,
): Promise<TrustState> {
  const enforced = pinnedRootKeys.length > 0;
  const pinned = new Set(pinnedRootKeys);
  let chain: Policy[] = [];
  let enrollment: EnrollmentState = enrollmentState(null, [], []);
  const policyDoc = await host.pin(POLICY_DOC);
  const enrollmentDoc = await host.pin(ENROLLMENT_DOC);
  await host.pin(TIMESTAMP_DOC);

  const recompute = (): void => {
    const walk = walkPolicyChain(chain, pinned, readPolicies(policyDoc.doc));
    if (walk.chain.length !== chain.length)
      logger.info(
        { event: 'policy-version', document: POLICY_DOC, version: walk.chain.at(-1)?.version },
        'policy in force',
      );
    chain = walk.chain;
    enrollment = enrollmentState(
      chain.at(-1) ?? null,
      readEnrollments(enrollmentDoc.doc),
      readEnrollRequests(enrollmentDoc.doc),
    );
  };
  if (enforced) {
    recompute();
    policyDoc.doc.on('update', recompute);
    enrollmentDoc.doc.on('update', recompute);
  }

  function principalForKey(key: string): Principal {
    const policy = chain.at(-1);
    const label = `key:${key}`;
    if (!policy) return { kind: 'unknown-key', label, key };
    const admin = adminForKey(policy, key);
    if (admin) return { kind: 'admin', label: `admin:${admin.name}`, key, name: admin.name };
    for (const binding of enrollment.bindings.values())
      if (binding.hostKey === key) return { kind: 'agent', label: `host:${binding.host}`, key, host: binding.host };
    if (policy.relays.some((r) => r.key === key))
      return { kind: 'relay', label: `relay:${policy.relays.find((r) => r.key === key)!.name}`, key };
    return { kind: 'unknown-key', label, key };
  }

  function access(principal: Principal, document: string): Access {
    if (!enforced) return 'write';
    const policy = chain.at(-1);
    if (!policy) return 'none';
    const parsed = parseDocName(document);
    const fleetDocument = document.startsWith('fleet/');
    switch (principal.kind) {
      case 'anonymous':
      case 'unknown-key':
        return 'none';
      case 'agent':
        if (fleetDocument) return document === ENROLLMENT_DOC ? 'none' : 'read';
        if (!parsed || parsed.host !== principal.host) return 'none';
        return parsed.role === 'status' ? 'write' : 'read';
      case 'relay':
        // A relay forwards its hosts' writes both ways; what it forwards stays signed end to end.
        if (fleetDocument) return 'read';
        return parsed && relayServesHost(policy, principal.key, parsed.host) ? 'write' : 'none';
      case 'admin': {
        const admin = adminForKey(policy, principal.key);
        if (!admin) return 'none';
        // Fleet documents are written by the coordinator after it verified each entry.
        if (fleetDocument || !parsed) return 'read';
        if (parsed.role === 'desired') {
          const capabilities = capabilitiesFor(policy, admin, parsed.host);
          // Remote action requests travel in the desired document too (docs/access.md).
          const writers = ['deploy', 'rollback', 'reboot', 'lock', 'collect', 'check'] as const;
          if (writers.some((capability) => capabilities.has(capability))) return 'write';
        }
        // Read scope is per host: `read` on h1 opens h1's documents only.
        return mayReadHost(policy, admin, parsed.host) ? 'read' : 'none';
      }
    }
  }

  return {
    enforced,
    policy: () => chain.at(-1) ?? null,
    chain: () => chain,
    bindings: () => enrollment.bindings,
    principalForKey,
    access,
  };
}
