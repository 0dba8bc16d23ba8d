// Seed 001 (MesaMagica, "SignalR + Redis Pub/Sub Implementation Guide"), section "7.3 Admin
// Dashboard Integration" (mesa-magica-pwa-app/src/pages/admin/Orders.tsx): the component's
// handlers as written, TypeScript types removed. `useSignalR` (section 7.2's context, over a
// connection to HUB_URL with ACCESS_TOKEN), `useState`, `useEffect`, `toast` and
// `playNotificationSound` are provided by tests/js/compat-driver.mjs.
const Orders = () => {
  const { on, off, isConnected } = useSignalR();
  const [orders, setOrders] = useState([]);

  useEffect(() => {
    if (!isConnected) return;

    // Listen for order updates
    const handleOrderStatusChanged = (notification) => {
      console.log('Order status changed:', notification);
      
      // Update order in state
      setOrders(prev => prev.map(order => 
        order.orderId === notification.data.orderId
          ? { ...order, status: notification.data.status }
          : order
      ));

      // Show toast notification
      toast.success(`Order ${notification.data.orderId.slice(0, 8)} is now ${notification.data.status}`);
    };

    const handleNewOrder = (notification) => {
      console.log('New order received:', notification);
      
      // Add new order to state
      setOrders(prev => [notification.data.order, ...prev]);

      // Play notification sound
      playNotificationSound();

      // Show toast
      toast.info(`New order from Table ${notification.data.tableNumber}`);
    };

    // Subscribe to events
    on('OrderStatusChanged', handleOrderStatusChanged);
    on('NewOrder', handleNewOrder);

    // Cleanup
    return () => {
      off('OrderStatusChanged', handleOrderStatusChanged);
      off('NewOrder', handleNewOrder);
    };
  }, [isConnected, on, off]);

  // Rest of component...
};
