// Seed 004 (LBS notification service, "Real-Time Notification System - Technical Design"),
// section "Client SDK" > "TypeScript Client Implementation" > NotificationClient.ts, copied as
// written. Plain JavaScript so Node 20 runs it without a transpiler: only the TypeScript type
// annotations, the two interfaces (SubscriptionOptions, Notification) and the `private` modifiers
// are removed; every statement is the seed's. It uses the browser's global WebSocket (Node:
// --experimental-websocket). The URL and the token are the constructor's arguments, as in the seed.

export class NotificationClient {
  ws = null;
  subscriptions = new Map();
  reconnectAttempts = 0;
  maxReconnectAttempts = 10;
  reconnectDelay = 1000;

  constructor(
    url,
    authToken
  ) {
    this.url = url;
    this.authToken = authToken;
  }

  async connect() {
    const wsUrl = this.authToken
      ? `${this.url}?token=${this.authToken}`
      : this.url;

    this.ws = new WebSocket(wsUrl);

    this.ws.onopen = () => {
      console.log('NotificationClient connected');
      this.reconnectAttempts = 0;
      this.resubscribeAll();
    };

    this.ws.onmessage = (event) => {
      this.handleMessage(JSON.parse(event.data));
    };

    this.ws.onclose = () => {
      console.log('NotificationClient disconnected');
      this.handleReconnect();
    };

    this.ws.onerror = (error) => {
      console.error('WebSocket error:', error);
    };
  }

  subscribe(options) {
    const subscriptionId = `${options.entityType}:${options.entityId}`;
    this.subscriptions.set(subscriptionId, options);

    if (this.ws?.readyState === WebSocket.OPEN) {
      this.sendSubscribe(options.entityType, options.entityId);
    }

    return subscriptionId;
  }

  unsubscribe(subscriptionId) {
    const options = this.subscriptions.get(subscriptionId);
    if (options && this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({
        type: 'unsubscribe',
        data: { subscriptionId }
      }));
    }
    this.subscriptions.delete(subscriptionId);
  }

  disconnect() {
    this.ws?.close();
    this.subscriptions.clear();
  }

  sendSubscribe(entityType, entityId) {
    this.ws?.send(JSON.stringify({
      type: 'subscribe',
      data: { entityType, entityId }
    }));
  }

  handleMessage(message) {
    if (message.type === 'notification') {
      const subscriptionId = `${message.data.entityType}:${message.data.entityId}`;
      const subscription = this.subscriptions.get(subscriptionId);
      subscription?.onNotification(message.data);
    }
  }

  handleReconnect() {
    if (this.reconnectAttempts < this.maxReconnectAttempts) {
      this.reconnectAttempts++;
      const delay = this.reconnectDelay * Math.pow(2, this.reconnectAttempts - 1);

      setTimeout(() => {
        console.log(`Reconnecting... (attempt ${this.reconnectAttempts})`);
        this.connect();
      }, delay);
    }
  }

  resubscribeAll() {
    this.subscriptions.forEach((options) => {
      this.sendSubscribe(options.entityType, options.entityId);
    });
  }
}
