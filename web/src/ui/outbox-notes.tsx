import { type ApiOutbox, type ApiOutboxEntry, arriving, type Waiting } from '../sync/api-outbox.js';
import { clock } from './format.js';

// How the pages word an entry of the API outbox: one wording for every kind, so an admin reads
// "not yet delivered", "arriving" and "the server and its document disagree" the same everywhere.

// `missing`: what the server serves instead of the entry, and what to do (after the arrival grace).
export function DeliveryNote(props: { waiting: Waiting<unknown>; now: number; missing: string }) {
  const { waiting, now, missing } = props;
  if (waiting.deliveredAt === null)
    return <strong class="warn">NOT YET DELIVERED — waits in this browser, sent when the link returns</strong>;
  if (arriving(waiting, now)) return <>stored by the server, arriving</>;
  return (
    <strong class="bad">
      the server answered that it stored it at {clock(waiting.deliveredAt)}, but {missing}
    </strong>
  );
}

// A refusal is final: shown with the server's reason until the admin dismisses it.
export function RefusedNote(props: { entry: ApiOutboxEntry; outbox: ApiOutbox; testId: string; block?: boolean }) {
  const { entry, outbox, testId } = props;
  const body = (
    <>
      {entry.what}: REFUSED by the server: {entry.refused}{' '}
      <button type="button" onClick={() => void outbox.dismiss(entry.id)}>
        Dismiss
      </button>
    </>
  );
  return props.block ? (
    <p class="bad" data-testid={testId}>
      {body}
    </p>
  ) : (
    <li class="bad" data-testid={testId}>
      {body}
    </li>
  );
}
