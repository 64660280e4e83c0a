// Readiness probe used by broker.sh: asks the broker for cluster metadata with the
// real Java client (a DescribeCluster/Metadata round trip) and exits 0 once the
// broker lists itself and a controller. Run as a single-file program:
//   java -cp 'libs/*' KafkaReady.java 127.0.0.1:9092 <timeout-seconds>
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "200");
        Exception last = null;
        try (Admin admin = Admin.create(props)) {
            while (System.nanoTime() < deadline) {
                try {
                    DescribeClusterResult r = admin.describeCluster();
                    int nodes = r.nodes().get(5, TimeUnit.SECONDS).size();
                    String controller = String.valueOf(r.controller().get(5, TimeUnit.SECONDS));
                    String clusterId = r.clusterId().get(5, TimeUnit.SECONDS);
                    if (nodes > 0) {
                        System.out.println("READY cluster=" + clusterId + " nodes=" + nodes + " controller=" + controller);
                        return;
                    }
                } catch (Exception e) {
                    last = e;
                }
                Thread.sleep(300);
            }
        }
        System.out.println("NOT READY: " + last);
        System.exit(1);
    }
}
