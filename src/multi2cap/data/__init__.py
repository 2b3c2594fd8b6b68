"""multi2cap.data"""
