// Seed 003 (MeAndMyDoggy, "SignalR Real-time Messaging Architecture"), section "## Vue.js
// SignalR Integration" / "### SignalR Store (Pinia)" (stores/signalr.ts): the store as written,
// TypeScript types removed. Changed: the hub URL ('/hubs/chat' -> HUB_URL). The token source is
// the store's own (`authStore.token`). Its imports (`defineStore` from pinia, `ref` and `computed`
// from vue, `signalR`, `useAuthStore`) and the browser's `window` are provided by
// tests/js/compat-driver.mjs; the handlers and actions are the seed's, unchanged.
const useSignalRStore = defineStore('signalr', () => {
  // State
  const connection = ref(null)
  const isConnected = ref(false)
  const isConnecting = ref(false)
  const connectionError = ref(null)
  const messages = ref([])
  const conversations = ref([])
  const notifications = ref([])
  const onlineUsers = ref(new Set())
  const typingUsers = ref(new Map())

  // Getters
  const connectionState = computed(() => {
    if (!connection.value) return 'Disconnected'
    return signalR.HubConnectionState[connection.value.state]
  })

  const unreadNotifications = computed(() => 
    notifications.value.filter(n => !n.isRead).length
  )

  // Actions
  async function connect() {
    const authStore = useAuthStore()
    
    if (!authStore.isAuthenticated || isConnected.value || isConnecting.value) {
      return
    }

    try {
      isConnecting.value = true
      connectionError.value = null

      connection.value = new signalR.HubConnectionBuilder()
        .withUrl(HUB_URL, {
          accessTokenFactory: () => authStore.token || '',
          transport: signalR.HttpTransportType.WebSockets
        })
        .withAutomaticReconnect({
          nextRetryDelayInMilliseconds: (retryContext) => {
            // Exponential backoff: 0, 2, 10, 30 seconds, then 30 seconds
            if (retryContext.previousRetryCount === 0) return 0
            if (retryContext.previousRetryCount === 1) return 2000
            if (retryContext.previousRetryCount === 2) return 10000
            return 30000
          }
        })
        .configureLogging(signalR.LogLevel.Information)
        .build()

      // Set up event handlers
      setupEventHandlers()

      // Start connection
      await connection.value.start()
      isConnected.value = true

      console.log('SignalR connected successfully')
    } catch (error) {
      connectionError.value = error.message || 'Failed to connect to SignalR'
      console.error('SignalR connection error:', error)
    } finally {
      isConnecting.value = false
    }
  }

  async function disconnect() {
    if (connection.value) {
      try {
        await connection.value.stop()
      } catch (error) {
        console.error('Error stopping SignalR connection:', error)
      } finally {
        connection.value = null
        isConnected.value = false
        isConnecting.value = false
        connectionError.value = null
      }
    }
  }

  function setupEventHandlers() {
    if (!connection.value) return

    // Message events
    connection.value.on('ReceiveMessage', (message) => {
      messages.value.push(message)
      updateConversationLastMessage(message)
      
      // Show notification if not in active conversation
      if (!isConversationActive(message.conversationId)) {
        showMessageNotification(message)
      }
    })

    connection.value.on('MessageSent', (message) => {
      // Update local message with server response
      const localMessage = messages.value.find(m => m.tempId === message.tempId)
      if (localMessage) {
        Object.assign(localMessage, message)
      } else {
        messages.value.push(message)
      }
      updateConversationLastMessage(message)
    })

    connection.value.on('MessageError', (error) => {
      console.error('Message error:', error)
      // Handle message send failure
    })

    // Typing events
    connection.value.on('UserStartedTyping', (conversationId, userId) => {
      if (!typingUsers.value.has(conversationId)) {
        typingUsers.value.set(conversationId, new Set())
      }
      typingUsers.value.get(conversationId)?.add(userId)
    })

    connection.value.on('UserStoppedTyping', (conversationId, userId) => {
      typingUsers.value.get(conversationId)?.delete(userId)
    })

    // Presence events
    connection.value.on('UserOnline', (userId) => {
      onlineUsers.value.add(userId)
    })

    connection.value.on('UserOffline', (userId) => {
      onlineUsers.value.delete(userId)
    })

    // Notification events
    connection.value.on('ReceiveNotification', (notification) => {
      notifications.value.unshift(notification)
      showPushNotification(notification)
    })

    // Connection state events
    connection.value.onreconnecting((error) => {
      isConnected.value = false
      connectionError.value = error?.message || 'Reconnecting...'
      console.log('SignalR reconnecting:', error)
    })

    connection.value.onreconnected((connectionId) => {
      isConnected.value = true
      connectionError.value = null
      console.log('SignalR reconnected:', connectionId)
      
      // Rejoin active conversations
      rejoinActiveConversations()
    })

    connection.value.onclose((error) => {
      isConnected.value = false
      connectionError.value = error?.message || 'Connection closed'
      console.log('SignalR connection closed:', error)
    })
  }

  // Message methods
  async function sendMessage(
    recipientId, 
    content, 
    messageType = 'Text'
  ) {
    if (!connection.value || !isConnected.value) {
      throw new Error('Not connected to SignalR')
    }

    try {
      // Create optimistic message
      const tempMessage = {
        id: '',
        tempId: generateTempId(),
        conversationId: getOrCreateConversationId(recipientId),
        senderId: useAuthStore().user?.id || '',
        recipientId,
        content,
        messageType,
        timestamp: new Date().toISOString(),
        deliveryStatus: 'sending',
        isRead: false
      }

      messages.value.push(tempMessage)

      await connection.value.invoke('SendMessage', recipientId, content, messageType)
      return true
    } catch (error) {
      console.error('Error sending message:', error)
      return false
    }
  }

  async function joinConversation(conversationId) {
    if (!connection.value || !isConnected.value) return

    try {
      await connection.value.invoke('JoinConversation', conversationId)
    } catch (error) {
      console.error('Error joining conversation:', error)
    }
  }

  async function leaveConversation(conversationId) {
    if (!connection.value || !isConnected.value) return

    try {
      await connection.value.invoke('LeaveConversation', conversationId)
    } catch (error) {
      console.error('Error leaving conversation:', error)
    }
  }

  async function startTyping(conversationId) {
    if (!connection.value || !isConnected.value) return

    try {
      await connection.value.invoke('StartTyping', conversationId)
    } catch (error) {
      console.error('Error starting typing:', error)
    }
  }

  async function stopTyping(conversationId) {
    if (!connection.value || !isConnected.value) return

    try {
      await connection.value.invoke('StopTyping', conversationId)
    } catch (error) {
      console.error('Error stopping typing:', error)
    }
  }

  // Helper functions
  function updateConversationLastMessage(message) {
    const conversation = conversations.value.find(c => c.id === message.conversationId)
    if (conversation) {
      conversation.lastMessage = message
      conversation.updatedAt = message.timestamp
    }
  }

  function isConversationActive(conversationId) {
    // Check if user is currently viewing this conversation
    return window.location.pathname.includes(`/messages/${conversationId}`)
  }

  function showMessageNotification(message) {
    // Show browser notification or toast
    if ('Notification' in window && Notification.permission === 'granted') {
      new Notification('New Message', {
        body: message.content,
        icon: '/images/logo.png'
      })
    }
  }

  function showPushNotification(notification) {
    // Handle push notification display
    window.toast?.info(notification.message, {
      title: notification.title,
      duration: 5000
    })
  }

  function generateTempId() {
    return `temp_${Date.now()}_${Math.random().toString(36).substr(2, 9)}`
  }

  function getOrCreateConversationId(recipientId) {
    const authStore = useAuthStore()
    const currentUserId = authStore.user?.id || ''
    
    // Find existing conversation
    const existingConversation = conversations.value.find(c => 
      c.participants.some(p => p.userId === recipientId) &&
      c.participants.some(p => p.userId === currentUserId)
    )
    
    if (existingConversation) {
      return existingConversation.id
    }
    
    // Create temporary conversation ID
    return `temp_${[currentUserId, recipientId].sort().join('_')}`
  }

  async function rejoinActiveConversations() {
    // Rejoin conversations that were active before disconnection
    const activeConversations = conversations.value.filter(c => c.isActive)
    for (const conversation of activeConversations) {
      await joinConversation(conversation.id)
    }
  }

  function isUserOnline(userId) {
    return onlineUsers.value.has(userId)
  }

  function getTypingUsers(conversationId) {
    return Array.from(typingUsers.value.get(conversationId) || [])
  }

  function markNotificationAsRead(notificationId) {
    const notification = notifications.value.find(n => n.id === notificationId)
    if (notification) {
      notification.isRead = true
    }
  }

  function clearNotifications() {
    notifications.value = []
  }

  return {
    // State
    connection,
    isConnected,
    isConnecting,
    connectionError,
    messages,
    conversations,
    notifications,
    onlineUsers,
    typingUsers,

    // Getters
    connectionState,
    unreadNotifications,

    // Actions
    connect,
    disconnect,
    sendMessage,
    joinConversation,
    leaveConversation,
    startTyping,
    stopTyping,
    isUserOnline,
    getTypingUsers,
    markNotificationAsRead,
    clearNotifications
  }
})
