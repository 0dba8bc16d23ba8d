// Seed 001 (MesaMagica, "SignalR + Redis Pub/Sub Implementation Guide"), section "7.1 SignalR
// Client Setup" (mesa-magica-pwa-app/src/services/signalr/SignalRService.ts), as written with its
// TypeScript types removed. Run as a classic script by tests/js/compat-driver.mjs, so the module
// lines (`import * as signalR from '@microsoft/signalr'`, `export`) are dropped: the driver provides
// the `signalR` global. The one change: the base URL comes from the global VITE_API_BASE_URL the
// driver sets instead of Vite's `import.meta.env.VITE_API_BASE_URL` (a classic script has no
// `import.meta`); the path, `/hubs/notifications`, is the seed's.
class SignalRService {
  connection = null;
  reconnectAttempts = 0;
  maxReconnectAttempts = 5;

  async connect(accessToken) {
    if (this.connection?.state === signalR.HubConnectionState.Connected) {
      return;
    }

    this.connection = new signalR.HubConnectionBuilder()
      .withUrl(`${VITE_API_BASE_URL}/hubs/notifications`, {
        accessTokenFactory: () => accessToken,
        transport: signalR.HttpTransportType.WebSockets |
                   signalR.HttpTransportType.ServerSentEvents,
      })
      .withAutomaticReconnect({
        nextRetryDelayInMilliseconds: (retryContext) => {
          if (retryContext.previousRetryCount < 5) {
            return Math.min(1000 * Math.pow(2, retryContext.previousRetryCount), 30000);
          }
          return null; // Stop reconnecting
        },
      })
      .configureLogging(signalR.LogLevel.Information)
      .build();

    this.setupEventHandlers();

    try {
      await this.connection.start();
      console.log('SignalR Connected');
      this.reconnectAttempts = 0;
    } catch (error) {
      console.error('SignalR Connection Error:', error);
      this.handleReconnect();
    }
  }

  setupEventHandlers() {
    if (!this.connection) return;

    this.connection.onreconnecting((error) => {
      console.warn('SignalR Reconnecting...', error);
    });

    this.connection.onreconnected((connectionId) => {
      console.log('SignalR Reconnected:', connectionId);
      this.reconnectAttempts = 0;
    });

    this.connection.onclose((error) => {
      console.error('SignalR Connection Closed:', error);
      this.handleReconnect();
    });
  }

  handleReconnect() {
    if (this.reconnectAttempts < this.maxReconnectAttempts) {
      this.reconnectAttempts++;
      const delay = Math.min(1000 * Math.pow(2, this.reconnectAttempts), 30000);
      
      setTimeout(() => {
        const token = localStorage.getItem('jwt') || localStorage.getItem('adminToken');
        if (token) {
          this.connect(token);
        }
      }, delay);
    }
  }

  on(eventName, callback) {
    this.connection?.on(eventName, callback);
  }

  off(eventName, callback) {
    if (callback) {
      this.connection?.off(eventName, callback);
    } else {
      this.connection?.off(eventName);
    }
  }

  async disconnect() {
    if (this.connection) {
      await this.connection.stop();
      this.connection = null;
    }
  }

  async invoke(methodName, ...args) {
    if (this.connection?.state === signalR.HubConnectionState.Connected) {
      return await this.connection.invoke(methodName, ...args);
    }
    throw new Error('SignalR not connected');
  }

  get connectionState() {
    return this.connection?.state ?? null;
  }
}

const signalRService = new SignalRService();
