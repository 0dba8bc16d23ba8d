// Seed 001 (MesaMagica, "SignalR + Redis Pub/Sub Implementation Guide"), section "7.2 React
// Context for SignalR" (mesa-magica-pwa-app/src/context/SignalRContext.tsx), as written with its
// TypeScript types removed. Run as a classic script by tests/js/compat-driver.mjs with the real
// React 18 (the driver provides `React`, `createContext`, `useContext`, `useEffect`, `useState` as
// the imports would, and `useAppContext` with the JWT): the module lines are dropped, and the one
// JSX element is written as the call the JSX compiler makes of it (React.createElement).
const SignalRContext = createContext(undefined);

const SignalRProvider = ({ children }) => {
  const { jwt } = useAppContext();
  const [isConnected, setIsConnected] = useState(false);

  useEffect(() => {
    if (jwt) {
      signalRService.connect(jwt).then(() => {
        setIsConnected(true);
      });

      return () => {
        signalRService.disconnect();
        setIsConnected(false);
      };
    }
  }, [jwt]);

  const contextValue = {
    isConnected,
    on: signalRService.on.bind(signalRService),
    off: signalRService.off.bind(signalRService),
    invoke: signalRService.invoke.bind(signalRService),
  };

  return (
    React.createElement(SignalRContext.Provider, { value: contextValue }, children)
  );
};

const useSignalR = () => {
  const context = useContext(SignalRContext);
  if (!context) {
    throw new Error('useSignalR must be used within SignalRProvider');
  }
  return context;
};
