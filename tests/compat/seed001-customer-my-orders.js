// Seed 001 (MesaMagica, "SignalR + Redis Pub/Sub Implementation Guide"), section "7.4 Customer
// Order Tracking" (mesa-magica-pwa-app/src/components/MyOrders.tsx), as written with its
// TypeScript types removed; the module lines are dropped (tests/js/compat-driver.mjs provides
// `useSignalR` from seed001-signalr-context.js, React's hooks and `toast`). The component's
// "Rest of component..." (its markup) is not in the seed, so it renders nothing. The status
// messages' emoji, garbled by the document's encoding, are written as the characters they were.
const MyOrders = () => {
  const { on, off, isConnected } = useSignalR();
  const [orders, setOrders] = useState([]);

  useEffect(() => {
    if (!isConnected) return;

    const handleOrderUpdate = (notification) => {
      console.log('Order status update:', notification);
      
      setOrders(prev => prev.map(order =>
        order.orderId === notification.data.orderId
          ? { ...order, status: notification.data.status }
          : order
      ));

      // Show user-friendly notification
      const statusMessages = {
        'Preparing': '👨‍🍳 Your order is being prepared',
        'Served': '🍽️ Your order is ready!',
        'Closed': '✅ Order completed'
      };
      toast.info(statusMessages[notification.data.status] || 'Order updated');
    };

    on('OrderStatusUpdate', handleOrderUpdate);

    return () => {
      off('OrderStatusUpdate', handleOrderUpdate);
    };
  }, [isConnected, on, off]);

  // Rest of component...
};
