// Seed 004 (LBS notification service, "Real-Time Notification System - Technical Design"),
// section "Client SDK" > "React Hook" > useEntitySubscription.ts, copied as written. Plain
// JavaScript (type annotations removed); `react` is replaced by the minimal stand-in in
// react-standin.mjs so the hook's subscribe (mount) and unsubscribe (unmount) run in Node.

import { useEffect, useRef } from './react-standin.mjs';

export function useEntitySubscription(
  client,
  entityType,
  entityId,
  onNotification
) {
  const subscriptionIdRef = useRef(null);

  useEffect(() => {
    subscriptionIdRef.current = client.subscribe({
      entityType,
      entityId,
      onNotification
    });

    return () => {
      if (subscriptionIdRef.current) {
        client.unsubscribe(subscriptionIdRef.current);
      }
    };
  }, [client, entityType, entityId, onNotification]);
}
